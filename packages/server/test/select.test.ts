/**
 * Cache selection: the IP and CIDR matcher on its own, then the precedence user > namespace > network >
 * default > none over a real (in-memory) state repository.
 */
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import {
  cidrContains,
  explainCacheSelection,
  formatCidr,
  formatIp,
  longestNamespaceMatch,
  longestNetworkMatch,
  parseCidr,
  parseIp,
  selectCache,
  type IpAddress,
} from '../src/state/select.js';
import { SqliteStateRepository } from '../src/state/sqlite.js';

function ip(text: string): IpAddress {
  const parsed = parseIp(text);
  assert.ok(parsed, `${text} should parse`);
  return parsed;
}

function cidr(text: string) {
  const parsed = parseCidr(text);
  assert.ok(parsed, `${text} should parse`);
  return parsed;
}

describe('parseIp', () => {
  it('parses IPv4 and IPv6 in every notation', () => {
    assert.deepEqual(parseIp('0.0.0.0'), { family: 4, value: 0n });
    assert.deepEqual(parseIp('255.255.255.255'), { family: 4, value: 0xffffffffn });
    assert.deepEqual(parseIp('10.1.2.3'), { family: 4, value: 0x0a010203n });
    assert.deepEqual(parseIp('::'), { family: 6, value: 0n });
    assert.deepEqual(parseIp('::1'), { family: 6, value: 1n });
    assert.deepEqual(parseIp('1::'), { family: 6, value: 1n << 112n });
    assert.deepEqual(parseIp('2001:db8::8:800:200c:417a'), parseIp('2001:0DB8:0:0:8:800:200C:417A'));
    assert.deepEqual(parseIp('1:2:3:4:5:6:7:8'), { family: 6, value: 0x00010002000300040005000600070008n });
    assert.deepEqual(parseIp('1:2:3:4:5:6::8'), parseIp('1:2:3:4:5:6:0:8'), ':: may stand for a single zero group');
    assert.deepEqual(parseIp('64:ff9b::192.0.2.33'), { family: 6, value: (0x0064ff9bn << 96n) | 0xc0000221n }, 'a trailing dotted quad');
  });

  it('answers IPv4-mapped IPv6 addresses as IPv4', () => {
    for (const text of ['::ffff:10.1.2.3', '::FFFF:10.1.2.3', '0:0:0:0:0:ffff:10.1.2.3', '::ffff:a01:203']) {
      assert.deepEqual(parseIp(text), { family: 4, value: 0x0a010203n }, text);
    }
    assert.equal(parseIp('::10.1.2.3')?.family, 6, 'IPv4-compatible (deprecated) addresses are not mapped');
  });

  it('drops a zone only where allowed', () => {
    assert.equal(parseIp('fe80::1%eth0'), undefined);
    assert.deepEqual(parseIp('fe80::1%eth0', { allowZone: true }), parseIp('fe80::1'));
    assert.equal(parseIp('10.0.0.1%eth0', { allowZone: true }), undefined);
    assert.equal(parseIp('fe80::1%', { allowZone: true }), undefined);
  });

  it('refuses everything else', () => {
    const bad = [
      '', ' ', '1.2.3', '1.2.3.4.5', '256.0.0.1', '1.2.3.-4', '01.2.3.4', '1.2.3.04', '1..3.4', '0x1.2.3.4', '1.2.3.4 ',
      ':', ':::', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', '1::2::3', '12345::', 'g::', ':1::', '1::2:', '1:2:3:4:5:6:7:8::',
      '::1.2.3', '::1.2.3.4:5', '1.2.3.4::', '::ffff:256.1.1.1', 'x'.repeat(100), '[::1]',
    ];
    for (const text of bad) assert.equal(parseIp(text), undefined, JSON.stringify(text));
  });

  it('agrees with node:net on which well-formed strings are addresses', () => {
    const samples = ['10.0.0.1', '::', '::1', '2001:db8::1', '::ffff:1.2.3.4', '1:2:3:4:5:6:7:8', 'fe80::', '1.2.3', '1::2::3', '1:2:3:4:5:6:7:8:9', 'abcd::ef01:2345', '300.1.1.1'];
    for (const text of samples) assert.equal(parseIp(text) !== undefined, isIP(text) !== 0, text);
  });
});

describe('formatIp', () => {
  it('writes RFC 5952 canonical text', () => {
    const cases: [string, string][] = [
      ['10.1.2.3', '10.1.2.3'],
      ['2001:0DB8:0000:0000:0000:0000:0002:0001', '2001:db8::2:1'],
      ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // the first of two equal runs
      ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'], // the longest run
      ['0:0:0:0:0:0:0:0', '::'],
      ['0:0:0:0:0:0:0:1', '::1'],
      ['1:0:0:0:0:0:0:0', '1::'],
    ];
    for (const [input, expected] of cases) assert.equal(formatIp(ip(input)), expected, input);
  });
});

describe('parseCidr and cidrContains', () => {
  it('clears host bits and canonicalizes', () => {
    assert.equal(formatCidr(cidr('10.1.2.3/8')), '10.0.0.0/8');
    assert.equal(formatCidr(cidr('10.1.2.3')), '10.1.2.3/32');
    assert.equal(formatCidr(cidr('0.0.0.0/0')), '0.0.0.0/0');
    assert.equal(formatCidr(cidr('2001:DB8:1:2::5/48')), '2001:db8:1::/48');
    assert.equal(formatCidr(cidr('::1')), '::1/128');
    assert.equal(formatCidr(cidr('::/0')), '::/0');
    assert.equal(formatCidr(cidr('::ffff:10.0.0.0/104')), '10.0.0.0/8', 'mapped networks become IPv4');
    assert.equal(formatCidr(cidr('::ffff:0:0/96')), '0.0.0.0/0');
    assert.equal(formatCidr(cidr('::ffff:0:0/95')), '::fffe:0:0/95', 'wider than the mapped block it stays IPv6');
  });

  it('refuses malformed networks', () => {
    for (const text of ['', '/8', '10.0.0.0/', '10.0.0.0/33', '10.0.0.0/-1', '10.0.0.0/08', '10.0.0.0/8/8', '10.0.0.0/ 8', '::/129', 'fe80::%1/64', 'foo/8', '10.0.0.0/1e1']) {
      assert.equal(parseCidr(text), undefined, JSON.stringify(text));
    }
  });

  it('matches addresses inside the network only, never across families', () => {
    const ten = cidr('10.0.0.0/8');
    assert.equal(cidrContains(ten, ip('10.255.255.255')), true);
    assert.equal(cidrContains(ten, ip('10.0.0.0')), true);
    assert.equal(cidrContains(ten, ip('11.0.0.0')), false);
    assert.equal(cidrContains(ten, ip('9.255.255.255')), false);
    assert.equal(cidrContains(ten, ip('::ffff:10.9.8.7')), true, 'a mapped client matches the IPv4 rule');
    assert.equal(cidrContains(cidr('0.0.0.0/0'), ip('1.2.3.4')), true);
    assert.equal(cidrContains(cidr('0.0.0.0/0'), ip('::1')), false);
    assert.equal(cidrContains(cidr('::/0'), ip('1.2.3.4')), false);
    assert.equal(cidrContains(cidr('::/0'), ip('2001:db8::1')), true);
    assert.equal(cidrContains(cidr('1.2.3.4/32'), ip('1.2.3.4')), true);
    assert.equal(cidrContains(cidr('1.2.3.4/32'), ip('1.2.3.5')), false);
    assert.equal(cidrContains(cidr('2001:db8::/32'), ip('2001:db8:ffff::1')), true);
    assert.equal(cidrContains(cidr('2001:db8::/32'), ip('2001:db9::1')), false);
    assert.equal(cidrContains(cidr('2001:db8::1/128'), ip('2001:db8::1')), true);
    assert.equal(cidrContains(cidr('10.0.0.0/31'), ip('10.0.0.1')), true);
    assert.equal(cidrContains(cidr('10.0.0.0/31'), ip('10.0.0.2')), false);
  });

  it('picks the longest prefix, and the longest namespace', () => {
    const rules = [{ cidr: '10.0.0.0/8' }, { cidr: '10.1.0.0/16' }, { cidr: '0.0.0.0/0' }, { cidr: '10.1.2.0/24' }, { cidr: 'broken' }];
    assert.equal(longestNetworkMatch(rules, ip('10.1.2.3'))?.cidr, '10.1.2.0/24');
    assert.equal(longestNetworkMatch(rules, ip('10.1.3.3'))?.cidr, '10.1.0.0/16');
    assert.equal(longestNetworkMatch(rules, ip('10.2.0.1'))?.cidr, '10.0.0.0/8');
    assert.equal(longestNetworkMatch(rules, ip('192.0.2.1'))?.cidr, '0.0.0.0/0');
    assert.equal(longestNetworkMatch(rules, ip('2001:db8::1')), undefined);

    const namespaces = [{ namespace: 'team' }, { namespace: 'team/sub' }, { namespace: 'other' }];
    assert.equal(longestNamespaceMatch(namespaces, 'team/sub/app')?.namespace, 'team/sub');
    assert.equal(longestNamespaceMatch(namespaces, 'team/subway/app')?.namespace, 'team', 'whole path components only');
    assert.equal(longestNamespaceMatch(namespaces, 'team')?.namespace, 'team', 'a repository named like the namespace is in it');
    assert.equal(longestNamespaceMatch(namespaces, 'teamwork/app'), undefined);
    assert.equal(longestNamespaceMatch(namespaces, 'library/alpine'), undefined);
  });
});

describe('selectCache precedence', () => {
  async function setup(t: TestContext) {
    const state = new SqliteStateRepository(':memory:');
    t.after(() => state.close());
    const mk = (name: string) => state.create({ name, host: `http://${name}:5000` });
    const c = { user: await mk('user'), ns: await mk('ns'), nsDeep: await mk('ns-deep'), net: await mk('net'), net16: await mk('net16'), v6: await mk('v6'), dflt: await mk('default') };
    await state.setSettings('alice', { contentCacheUUID: c.user.id });
    await state.setNamespaceRule({ namespace: 'team', cacheId: c.ns.id });
    await state.setNamespaceRule({ namespace: 'team/sub', cacheId: c.nsDeep.id });
    await state.setNetworkRule({ cidr: '10.0.0.0/8', cacheId: c.net.id });
    await state.setNetworkRule({ cidr: '10.1.0.0/16', cacheId: c.net16.id });
    await state.setNetworkRule({ cidr: '2001:db8::/32', cacheId: c.v6.id });
    await state.setDefaultCache(c.dflt.id);
    return { state, c };
  }

  it('1) the user’s own setting wins over everything', async (t) => {
    const { state, c } = await setup(t);
    assert.deepEqual(await selectCache(state, { user: 'alice', repository: 'team/sub/app', clientIp: '10.1.2.3' }), c.user);
    assert.deepEqual(await explainCacheSelection(state, { user: 'alice', repository: 'x', clientIp: '10.1.2.3' }), { cache: c.user, source: 'user' });
  });

  it('2) then the longest matching namespace', async (t) => {
    const { state, c } = await setup(t);
    assert.deepEqual(await selectCache(state, { user: 'bob', repository: 'team/sub/app', clientIp: '10.1.2.3' }), c.nsDeep);
    assert.deepEqual(await explainCacheSelection(state, { user: 'bob', repository: 'team/app', clientIp: '10.1.2.3' }), { cache: c.ns, source: 'namespace', rule: 'team' });
  });

  it('3) then the most specific network, for IPv4, IPv6 and IPv4-mapped clients', async (t) => {
    const { state, c } = await setup(t);
    const pick = (clientIp: string) => explainCacheSelection(state, { user: 'bob', repository: 'library/alpine', clientIp });
    assert.deepEqual(await pick('10.1.2.3'), { cache: c.net16, source: 'network', rule: '10.1.0.0/16' });
    assert.deepEqual(await pick('10.2.0.1'), { cache: c.net, source: 'network', rule: '10.0.0.0/8' });
    assert.deepEqual(await pick('::ffff:10.1.2.3'), { cache: c.net16, source: 'network', rule: '10.1.0.0/16' });
    assert.deepEqual(await pick('2001:db8::42'), { cache: c.v6, source: 'network', rule: '2001:db8::/32' });
    assert.deepEqual(await pick('2001:db8::42%eth0'), { cache: c.v6, source: 'network', rule: '2001:db8::/32' });
  });

  it('4) then the default, 5) then none', async (t) => {
    const { state, c } = await setup(t);
    assert.deepEqual(await explainCacheSelection(state, { user: 'bob', repository: 'library/alpine', clientIp: '192.0.2.1' }), { cache: c.dflt, source: 'default' });
    assert.deepEqual(await selectCache(state, { user: 'bob', repository: 'library/alpine', clientIp: 'not an ip' }), c.dflt, 'an unparsable client address matches no network');
    assert.deepEqual(await selectCache(state, {}), c.dflt, 'anonymous, no repository, no address');
    await state.setDefaultCache(null);
    assert.deepEqual(await explainCacheSelection(state, { user: 'bob', repository: 'library/alpine', clientIp: '192.0.2.1' }), { cache: undefined, source: 'none' });
    assert.equal(await selectCache(state, {}), undefined);
  });

  it('a deleted cache makes its users fall back to the next step', async (t) => {
    const { state, c } = await setup(t);
    const request = { user: 'alice', repository: 'team/sub/app', clientIp: '10.1.2.3' };
    await state.delete(c.user.id);
    assert.deepEqual(await selectCache(state, request), c.nsDeep);
    await state.delete(c.nsDeep.id);
    assert.deepEqual(await selectCache(state, request), c.ns);
    await state.delete(c.ns.id);
    assert.deepEqual(await selectCache(state, request), c.net16);
    await state.delete(c.net16.id);
    assert.deepEqual(await selectCache(state, request), c.net);
    await state.delete(c.net.id);
    assert.deepEqual(await selectCache(state, request), c.dflt);
    await state.delete(c.dflt.id);
    assert.equal(await selectCache(state, request), undefined);
  });

  it('an anonymous pull skips the user step', async (t) => {
    const { state, c } = await setup(t);
    assert.deepEqual(await selectCache(state, { user: undefined, repository: 'team/app', clientIp: '10.1.2.3' }), c.ns);
    assert.deepEqual(await selectCache(state, { user: '', repository: 'team/app' }), c.ns);
  });
});
