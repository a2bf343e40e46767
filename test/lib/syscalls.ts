/**
 * Watching what a process does to the file system and the network with strace(1): the command prefix that
 * records every `open`/`openat`/`openat2` and `connect` of a process and its threads to a file, and a
 * parser of that file.
 *
 * The prefix runs `strace -f -y -s 8192 --seccomp-bpf -e trace=... -o FILE`: `--seccomp-bpf` stops the
 * tracee only on the traced calls (so a busy server barely slows down), `-y` prints the path behind every
 * descriptor (the directory of a relative `openat`, and the file a successful open returned, symlinks
 * resolved), `-s 8192` keeps whole paths. strace writes to FILE only; the program's stdout and stderr are
 * its own.
 */
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';

/** The traced system calls. */
export const TRACED_CALLS = ['open', 'openat', 'openat2', 'connect'] as const;

/** `strace` and its arguments, to put before a command. */
export function straceArgs(outputFile: string): string[] {
  return ['-f', '-y', '-s', '8192', '--seccomp-bpf', '-e', `trace=${TRACED_CALLS.join(',')}`, '-o', outputFile];
}

/** True when strace is installed and can trace a child here (ptrace may be forbidden in a container). */
export function straceUsable(): boolean {
  try {
    execFileSync('strace', ['-f', '--seccomp-bpf', '-e', 'trace=openat', '-o', '/dev/null', 'true'], { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

/** One open call. */
export interface OpenCall {
  readonly pid: number;
  readonly call: string;
  /** The path argument, unescaped. */
  readonly arg: string;
  /** The path the call named, made absolute (lexically, against its directory descriptor). */
  readonly requested: string;
  /** The file opened (symlinks resolved), when the call succeeded. */
  readonly opened?: string;
  /** `-1 ENOENT ...` and such, when it failed. */
  readonly error?: string;
  readonly line: string;
}

/** One connect call to an internet address (AF_UNIX and others are skipped). */
export interface ConnectCall {
  readonly pid: number;
  readonly family: 'AF_INET' | 'AF_INET6';
  readonly address: string;
  readonly port: number;
  readonly result: string;
  readonly line: string;
}

export interface SyscallTrace {
  readonly opens: OpenCall[];
  readonly connects: ConnectCall[];
  /** Lines of a traced call the parser could not read (reported, so nothing is silently skipped). */
  readonly unparsed: string[];
}

/** Unescapes a C string as strace prints it (`\n`, `\t`, `\"`, `\\`, `\xNN`, octal `\NNN`). */
export function unescapeC(s: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c !== '\\') {
      for (const b of Buffer.from(c, 'utf8')) bytes.push(b);
      continue;
    }
    const n = s[++i];
    const simple: Record<string, number> = { n: 10, t: 9, r: 13, v: 11, f: 12, '"': 34, '\\': 92, "'": 39, a: 7, b: 8 };
    if (n === undefined) break;
    if (n in simple) bytes.push(simple[n]!);
    else if (n === 'x') {
      bytes.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (/[0-7]/.test(n)) {
      let j = i;
      while (j < s.length && j < i + 3 && /[0-7]/.test(s[j]!)) j++;
      bytes.push(parseInt(s.slice(i, j), 8));
      i = j - 1;
    } else bytes.push(n.charCodeAt(0));
  }
  return Buffer.from(bytes).toString('latin1');
}

/** Reads a quoted C string starting at `s[at] === '"'`; returns its raw text and the index after it. */
function quoted(s: string, at: number): { raw: string; next: number } | undefined {
  if (s[at] !== '"') return undefined;
  let i = at + 1;
  for (; i < s.length; i++) {
    if (s[i] === '\\') i++;
    else if (s[i] === '"') return { raw: s.slice(at + 1, i), next: i + 1 };
  }
  return undefined;
}

/** Parses a file written with {@link straceArgs}; `cwd` is the traced process's working directory. */
export async function readSyscallTrace(file: string, cwd: string): Promise<SyscallTrace> {
  const text = await readFile(file, 'latin1').catch(() => '');
  const opens: OpenCall[] = [];
  const connects: ConnectCall[] = [];
  const unparsed: string[] = [];
  const pending = new Map<string, string>();
  for (const rawLine of text.split('\n')) {
    const m = /^(\d+)\s+(.*)$/.exec(rawLine);
    if (!m) continue;
    const pid = m[1]!;
    let body = m[2]!;
    // -f splits calls interrupted by another thread: "call(... <unfinished ...>" then "<... call resumed>...".
    const unfinished = /^(.*) <unfinished \.\.\.>$/.exec(body);
    if (unfinished) {
      pending.set(pid, unfinished[1]!);
      continue;
    }
    const resumed = /^<\.\.\. (\w+) resumed>(.*)$/.exec(body);
    if (resumed) {
      const start = pending.get(pid);
      pending.delete(pid);
      if (start === undefined) {
        unparsed.push(rawLine);
        continue;
      }
      body = start + resumed[2]!;
    }
    parse(pid, body, rawLine);
  }
  for (const [pid, start] of pending) parse(pid, `${start})`, `${pid} ${start} <unfinished, never resumed>`);
  return { opens, connects, unparsed };

  function parse(pid: string, body: string, rawLine: string): void {
    const call = /^(\w+)\(/.exec(body)?.[1];
    if (call === undefined || !(TRACED_CALLS as readonly string[]).includes(call)) return;
    const result = /\)\s+=\s+(.*)$/.exec(body)?.[1] ?? '';
    if (call === 'connect') {
      if (!/sa_family=AF_INET6?\b/.test(body)) return;
      const port = Number(/sin6?_port=htons\((\d+)\)/.exec(body)?.[1]);
      const v4 = /sin_addr=inet_addr\("([^"]*)"\)/.exec(body)?.[1];
      const v6 = /inet_pton\(AF_INET6, "([^"]*)"/.exec(body)?.[1];
      const address = v4 ?? v6;
      if (address === undefined || !Number.isFinite(port)) {
        unparsed.push(rawLine);
        return;
      }
      connects.push({ pid: Number(pid), family: v4 !== undefined ? 'AF_INET' : 'AF_INET6', address, port, result, line: rawLine });
      return;
    }
    // open("path", ...) | openat(DIRFD<dir>, "path", ...) | openat2(DIRFD<dir>, "path", {...}, n)
    let dir = cwd;
    let at = call.length + 1;
    if (call !== 'open') {
      const d = /^(AT_FDCWD|\d+)(?:<([^>]*)>)?, /.exec(body.slice(at));
      if (!d) {
        unparsed.push(rawLine);
        return;
      }
      if (d[2] !== undefined) dir = unescapeC(d[2]);
      else if (d[1] !== 'AT_FDCWD') dir = `/proc/${pid}/fd/${d[1]}`;
      at += d[0].length;
    }
    const q = quoted(body, at);
    if (!q) {
      unparsed.push(rawLine);
      return;
    }
    const arg = unescapeC(q.raw);
    const requested = isAbsolute(arg) ? resolve(arg) : resolve(dir, arg);
    const ok = /^(\d+)(?:<(.*)>)?/.exec(result);
    const opened = ok ? (ok[2] !== undefined ? unescapeC(ok[2]) : requested) : undefined;
    opens.push({ pid: Number(pid), call, arg, requested, ...(opened !== undefined ? { opened } : { error: result }), line: rawLine });
  }
}

/** True when `path` is `root` or inside it (lexically). */
export function isUnder(path: string, root: string): boolean {
  const r = resolve(root);
  const p = resolve(path);
  return p === r || p.startsWith(r.endsWith('/') ? r : `${r}/`);
}
