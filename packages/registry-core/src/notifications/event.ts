/**
 * Notification events in distribution's format (`notifications/event.go`, `bridge.go` of distribution 2.8):
 * the JSON of one event, with its keys in the order and with the omissions Go's encoder gives them
 * (`omitempty` on the target's fields and on `size`/`length` of 0; `request.id`, `method` and `useragent`
 * always present), and {@link RequestEvents}, what a `/v2/` handler reports once its request succeeded.
 */
import { randomUUID } from 'node:crypto';
import { isIP } from 'node:net';
import type { Context } from 'koa';
import type { Descriptor, ParsedManifest } from '../manifest.js';

/** The media type of an envelope, sent as the POST's Content-Type. */
export const EVENTS_MEDIA_TYPE = 'application/vnd.docker.distribution.events.v1+json';

/** distribution's blob descriptors carry no media type of their own: stat answers this one. */
export const BLOB_MEDIA_TYPE = 'application/octet-stream';

/** An event's action. */
export type EventAction = 'push' | 'pull' | 'delete' | 'mount';

/** A descriptor as Go encodes `distribution.Descriptor`. */
export interface EventDescriptor {
  mediaType?: string;
  size?: number;
  digest?: string;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: unknown;
}

/** `target`: what the event is about. */
export interface EventTarget extends EventDescriptor {
  length?: number;
  repository?: string;
  fromRepository?: string;
  url?: string;
  tag?: string;
  references?: EventDescriptor[];
}

/** `request`: the HTTP request that caused the event. */
export interface RequestRecord {
  id: string;
  addr?: string;
  host?: string;
  method: string;
  useragent: string;
}

/** `source`: the node that generated the event. */
export interface SourceRecord {
  addr?: string;
  instanceID?: string;
}

/** One event, as sent. */
export interface NotificationEvent {
  id: string;
  timestamp: string;
  action: EventAction;
  target: EventTarget;
  request: RequestRecord;
  actor: { name?: string };
  source: SourceRecord;
}

/** Where a request's events go: the notifier, which filters and queues them for each endpoint. */
export interface EventSink {
  /** Queues `event` for every endpoint that does not ignore it; resolves once it is on disk. */
  write(event: NotificationEvent): Promise<void>;
  readonly source: SourceRecord;
  /** `notifications.events.includereferences`. */
  readonly includeReferences: boolean;
  /** `http.host`, the base of target URLs when set. */
  readonly baseUrl?: string;
  /** `http.relativeurls`: target URLs are paths, as distribution's URL builder makes them then. */
  readonly relativeUrls: boolean;
}

/** Go's encoding of a descriptor: its keys in struct order, `omitempty` applied. */
function goDescriptor(d: { mediaType?: string; size?: number; digest?: string; urls?: string[]; annotations?: Record<string, string>; platform?: unknown }): EventDescriptor {
  const out: EventDescriptor = {};
  if (d.mediaType) out.mediaType = d.mediaType;
  if (d.size) out.size = d.size;
  if (d.digest) out.digest = d.digest;
  if (d.urls?.length) out.urls = d.urls;
  if (d.annotations && Object.keys(d.annotations).length > 0) out.annotations = d.annotations;
  if (d.platform) out.platform = d.platform;
  return out;
}

/**
 * The events of one request. Handlers call it after their work succeeded (distribution's listeners fire
 * after the store call returned without error); the dispatcher then awaits {@link durable}.
 */
export class RequestEvents {
  readonly #sink: EventSink | undefined;
  readonly #repository: string;
  readonly #request: RequestRecord;
  readonly #actor: { name?: string };
  readonly #base: string;
  readonly #writes: Promise<void>[] = [];

  constructor(sink: EventSink | undefined, ctx: Context, repository: string, user: string | undefined, prefix: string) {
    this.#sink = sink;
    this.#repository = repository;
    this.#request = sink ? requestRecord(ctx) : { id: '', method: '', useragent: '' };
    this.#actor = user ? { name: user } : {};
    this.#base = sink ? `${sink.relativeUrls ? '' : (sink.baseUrl?.replace(/\/+$/, '') ?? externalBase(ctx))}${prefix}` : '';
  }

  /** A manifest pushed or pulled; `tag` when the request named one. */
  manifest(action: 'push' | 'pull', manifest: ParsedManifest, tag?: string): void {
    if (!this.#sink) return;
    const digest = manifest.digest.toString();
    const target: EventTarget = {
      ...goDescriptor({ mediaType: manifest.mediaType, size: manifest.bytes.length, digest }),
      ...(manifest.bytes.length ? { length: manifest.bytes.length } : {}),
      repository: this.#repository,
      url: `${this.#base}/v2/${this.#repository}/manifests/${digest}`,
      ...(tag ? { tag } : {}),
    };
    if (this.#sink.includeReferences) {
      const refs: Descriptor[] = manifest.isIndex ? manifest.manifests : manifest.blobs;
      if (refs.length > 0) target.references = refs.map(goDescriptor);
    }
    this.#emit(action, target);
  }

  /** A blob pushed (upload committed), pulled (GET or HEAD), or mounted from `from`. */
  blob(action: 'push' | 'pull' | 'mount', digest: string, size: number, from?: string): void {
    if (!this.#sink) return;
    this.#emit(action, {
      ...goDescriptor({ mediaType: BLOB_MEDIA_TYPE, size, digest }),
      ...(size ? { length: size } : {}),
      repository: this.#repository,
      ...(from ? { fromRepository: from } : {}),
      url: `${this.#base}/v2/${this.#repository}/blobs/${digest}`,
    });
  }

  /** A manifest or blob deleted (by digest), or a tag deleted: the target holds the repository and that. */
  deleted(what: { digest: string } | { tag: string }): void {
    if (!this.#sink) return;
    this.#emit('delete', 'digest' in what ? { digest: what.digest, repository: this.#repository } : { repository: this.#repository, tag: what.tag });
  }

  /** Resolves once every event of the request is on disk (no-op without notifications). */
  async durable(): Promise<void> {
    await Promise.all(this.#writes);
  }

  #emit(action: EventAction, target: EventTarget): void {
    const sink = this.#sink;
    if (!sink) return;
    // The notifier logs a failed write (the events stay in memory and are written again), so nobody waits on it.
    this.#writes.push(sink.write({
      id: randomUUID(),
      timestamp: new Date().toISOString(),
      action,
      target,
      request: this.#request,
      actor: this.#actor,
      source: sink.source,
    }).catch(() => undefined));
  }
}

/**
 * distribution's `NewRequestRecord`: the client address is the first `X-Forwarded-For` entry or
 * `X-Real-Ip` when it is an IP address, else the peer's `ip:port`; the host is the `Host` header.
 */
function requestRecord(ctx: Context): RequestRecord {
  const socket = ctx.req.socket;
  const forwarded = ctx.get('x-forwarded-for').split(',')[0]?.trim() ?? '';
  const realIp = ctx.get('x-real-ip').trim();
  let addr: string | undefined;
  if (forwarded && isIP(forwarded)) addr = forwarded;
  else if (realIp && isIP(realIp)) addr = realIp;
  else if (socket.remoteAddress) addr = isIP(socket.remoteAddress) === 6 ? `[${socket.remoteAddress}]:${socket.remotePort}` : `${socket.remoteAddress}:${socket.remotePort}`;
  const host = ctx.get('host');
  return {
    id: typeof ctx.state.reqId === 'string' ? ctx.state.reqId : '',
    ...(addr ? { addr } : {}),
    ...(host ? { host } : {}),
    method: ctx.method,
    useragent: ctx.get('user-agent'),
  };
}

/** The registry's base URL as the client sees it, as distribution's URL builder finds it from a request. */
function externalBase(ctx: Context): string {
  const proto = ctx.get('x-forwarded-proto').split(',')[0]?.trim().toLowerCase();
  const scheme = proto === 'http' || proto === 'https' ? proto : ctx.req.socket && 'encrypted' in ctx.req.socket ? 'https' : 'http';
  const host = ctx.get('x-forwarded-host').split(',')[0]?.trim() || ctx.get('host');
  return `${scheme}://${host}`;
}
