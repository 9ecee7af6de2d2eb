// Fails each test of a file during which an exception went uncaught or a rejection unhandled.

import assert from 'node:assert/strict';
import test from 'node:test';

export function guard() {
  const seen = [];
  const record = (e) => seen.push(e);
  process.on('uncaughtException', record);
  process.on('unhandledRejection', record);
  test.afterEach(() => assert.deepEqual(seen.splice(0).map(String), [], 'no uncaught exception, no unhandled rejection'));
}
