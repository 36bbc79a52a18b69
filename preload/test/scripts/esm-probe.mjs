// ESM named, namespace and default imports must all see the patched functions.
import { readFileSync, existsSync } from 'fs';
import * as nodeFs from 'node:fs';
import fsDefault from 'fs';
import { readFile } from 'fs/promises';
import { execSync } from 'child_process';
if (process.env.PII_PROBE !== '1') process.exit(0);
const out = {
  named: readFileSync('a.txt', 'utf8'),
  exists: existsSync('sub/one.txt'),
  ns: nodeFs.readFileSync('sub/one.txt', 'utf8'),
  dflt: fsDefault.statSync('a.txt').size,
  prom: await readFile('a.txt', 'utf8'),
  exec: execSync('cat a.txt', { encoding: 'utf8' }),
  cwd: process.cwd() === process.env.EXPECT_CWD,
};
process.stdout.write(JSON.stringify(out));
