import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { loadConfig } from '@cascade/registry-core';

const DEPLOY = new URL('../../../../deploy/', import.meta.url);

describe('deploy/ config files', () => {
  it('every *.yml loads with cascade\'s own config loader, without warnings', async () => {
    const files = (await readdir(DEPLOY)).filter((f) => f.endsWith('.yml'));
    assert.ok(files.length > 0, 'deploy/ has config files');
    for (const f of files) {
      const { warnings } = loadConfig(new URL(f, DEPLOY).pathname, {});
      assert.deepEqual(warnings, [], f);
    }
  });
});
