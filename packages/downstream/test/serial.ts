/** Certificate serial numbers for the tests' own certificates (not a test file: the runner takes *.test.js). */
import { randomBytes } from 'node:crypto';

/**
 * A random serial number, positive and minimally encoded in DER (first byte 0x01 to 0x7f), as test/lib/pki.ts
 * and `cascade certs` make them. An odd-length hex string can encode with a leading zero byte, which OpenSSL
 * refuses now and then ("illegal padding"): a flaky test.
 */
export function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) || 0x01;
  return bytes.toString('hex');
}
