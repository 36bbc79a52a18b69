#!/usr/bin/env node
// The npm side of scripts/dist.sh (run by it, with the machine's node):
//   node scripts/dist.cjs builds <platforms>        what to build: "<rust target> <crate>..." lines
//   node scripts/dist.cjs stage <dir> <platforms>   write the packages to pack into <dir>
//   node scripts/dist.cjs check <dir> <platforms>   verify the tarballs in <dir>
// <platforms> is "all" or a comma list of pii platforms (linux-x64,darwin-arm64,...): the
// packages pi-bridge and @pi-bridge/agents are always part of a release.
//
// npm/platforms.json is the one list of platforms and agent targets; npm/*/package.json hold the
// fields every release shares. The version is the workspace's (Cargo.toml), in every package.
'use strict';

const fs = require('fs');
const path = require('path');
const zlib = require('zlib');
const crypto = require('crypto');

const root = path.resolve(__dirname, '..');
const npmDir = path.join(root, 'npm');
const platforms = JSON.parse(fs.readFileSync(path.join(npmDir, 'platforms.json'), 'utf8'));
const SCOPE = '@pi-bridge';
const AGENTS = `${SCOPE}/agents`;
const AGENT = 'pi-bridge-agent';

function die(message) {
  process.stderr.write(`dist: ${message}\n`);
  process.exit(1);
}

/** The workspace version: `version` of `[workspace.package]` in Cargo.toml. */
function workspaceVersion() {
  const toml = fs.readFileSync(path.join(root, 'Cargo.toml'), 'utf8');
  const m = /^\[workspace\.package\][^[]*?^version\s*=\s*"([^"]+)"/m.exec(toml);
  if (!m) die('no version in [workspace.package] of Cargo.toml');
  return m[1];
}

/** The wire protocol version: the literal of `protocol_version_literal!` in protocol/src/lib.rs. */
function protocolVersion() {
  const src = fs.readFileSync(path.join(root, 'protocol/src/lib.rs'), 'utf8');
  const m = /macro_rules! protocol_version_literal \{\s*\(\) => \{\s*(\d+)\s*\};/.exec(src);
  if (!m) die('no protocol_version_literal! in protocol/src/lib.rs');
  return m[1];
}

const platformId = (p) => `${p.os}-${p.cpu}`;
const piiPackage = (p) => `${SCOPE}/${platformId(p)}`;

/** The selected pii platforms. */
function selected(list) {
  if (list === 'all') return platforms.pii;
  const ids = list.split(',').filter(Boolean);
  const known = platforms.pii.map(platformId);
  for (const id of ids) {
    if (!known.includes(id)) die(`unknown platform ${id} (known: ${known.join(', ')})`);
  }
  if (!ids.length) die('no platform selected');
  return platforms.pii.filter((p) => ids.includes(platformId(p)));
}

/** `npm pack`'s file name for a package. */
const tarball = (name, version) => `${name.replace(/^@/, '').replace('/', '-')}-${version}.tgz`;

/** The tarballs of a release: package name → what must be inside. */
function expected(pii, version) {
  const out = new Map();
  out.set('pi-bridge', { kind: 'main' });
  out.set(AGENTS, { kind: 'agents' });
  for (const p of pii) out.set(piiPackage(p), { kind: 'pii', platform: p });
  for (const [name, e] of out) e.file = tarball(name, version);
  return out;
}

// ---- builds ---------------------------------------------------------------------------------

/** One line per Rust target: the target, then the crates to build for it. */
function builds(pii) {
  const crates = new Map();
  const add = (target, crate) => {
    if (!crates.has(target)) crates.set(target, []);
    crates.get(target).push(crate);
  };
  for (const t of platforms.agents) add(t, 'pi-bridge-agent');
  for (const p of pii) add(p.target, 'pi-bridge');
  for (const [t, c] of crates) console.log(`${t} ${c.join(' ')}`);
}

// ---- stage ----------------------------------------------------------------------------------

function template(name) {
  return JSON.parse(fs.readFileSync(path.join(npmDir, name, 'package.json'), 'utf8'));
}

function writePackage(dir, manifest, readme) {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  fs.writeFileSync(path.join(dir, 'README.md'), readme);
}

function copyBinary(from, to) {
  if (!fs.existsSync(from)) die(`${from} is missing (not built?)`);
  fs.mkdirSync(path.dirname(to), { recursive: true });
  fs.copyFileSync(from, to);
  fs.chmodSync(to, 0o755);
}

const release = (target, bin) => path.join(root, 'target', target, 'release', bin);

function stage(dir, pii) {
  const version = workspaceVersion();
  fs.rmSync(dir, { recursive: true, force: true });
  const pointer = 'Installed by `npm install -g pi-bridge`; see the package pi-bridge.\n';

  const main = template('pi-bridge');
  main.version = version;
  // Every platform of the release, even when this run builds only some (scripts/dist-test.sh).
  main.optionalDependencies = Object.fromEntries(platforms.pii.map((p) => [piiPackage(p), version]));
  const mainDir = path.join(dir, 'pi-bridge');
  writePackage(mainDir, main, fs.readFileSync(path.join(npmDir, 'pi-bridge', 'README.md'), 'utf8'));
  copyBinary(path.join(npmDir, 'pi-bridge', 'bin', 'pii.js'), path.join(mainDir, 'bin', 'pii.js'));

  const agents = { ...template('agents'), version };
  const agentsDir = path.join(dir, 'agents');
  writePackage(agentsDir, agents, `# ${AGENTS}\n\nThe static Linux agents of pi-bridge ${version}, one per directory named by Rust target. ${pointer}`);
  for (const t of platforms.agents) copyBinary(release(t, AGENT), path.join(agentsDir, t, AGENT));

  for (const p of pii) {
    const manifest = {
      name: piiPackage(p),
      version,
      description: `The pii binary of pi-bridge for ${p.os} ${p.cpu} (installed with \`npm install -g pi-bridge\`)`,
      ...template('platform'),
      os: [p.os],
      cpu: [p.cpu],
      dependencies: { [AGENTS]: version },
    };
    const d = path.join(dir, platformId(p));
    writePackage(d, manifest, `# ${manifest.name}\n\npii ${version} for ${p.os} ${p.cpu} (${p.target}). ${pointer}`);
    copyBinary(release(p.target, 'pii'), path.join(d, 'bin', 'pii'));
  }
}

// ---- check ----------------------------------------------------------------------------------

/** The files of a .tgz: path (without `package/`) → { mode, data }. */
function untar(file) {
  const buf = zlib.gunzipSync(fs.readFileSync(file));
  const files = new Map();
  let pax = {};
  for (let off = 0; off + 512 <= buf.length; ) {
    const h = buf.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const str = (a, b) => h.subarray(a, b).toString('latin1').replace(/\0.*$/s, '');
    const size = parseInt(str(124, 136).trim() || '0', 8);
    const type = str(156, 157) || '0';
    const data = buf.subarray(off + 512, off + 512 + size);
    off += 512 + Math.ceil(size / 512) * 512;
    if (type === 'x') {
      pax = Object.fromEntries(
        data.toString('utf8').split('\n').filter(Boolean).map((r) => {
          const kv = r.slice(r.indexOf(' ') + 1);
          return [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)];
        }),
      );
      continue;
    }
    const prefix = str(345, 500);
    const name = pax.path || (prefix ? `${prefix}/${str(0, 100)}` : str(0, 100));
    pax = {};
    if (type !== '0' && type !== '') throw new Error(`${name}: entry type ${type} (only plain files belong in a package)`);
    if (!name.startsWith('package/')) throw new Error(`${name}: outside package/`);
    files.set(name.slice('package/'.length), { mode: parseInt(str(100, 108).trim(), 8), data });
  }
  return files;
}

/** ELF facts: machine, and whether it loads anything at run time (PT_INTERP or DT_NEEDED). */
function elf(b) {
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46) return null;
  if (b[4] !== 2 || b[5] !== 1) throw new Error('not a 64-bit little-endian ELF');
  const machine = b.readUInt16LE(18);
  const phoff = Number(b.readBigUInt64LE(32));
  const phentsize = b.readUInt16LE(54);
  const phnum = b.readUInt16LE(56);
  const needs = [];
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    const type = b.readUInt32LE(ph);
    if (type === 3) needs.push('PT_INTERP (a dynamic loader)');
    if (type === 2) {
      const off = Number(b.readBigUInt64LE(ph + 8));
      const size = Number(b.readBigUInt64LE(ph + 32));
      for (let d = off; d + 16 <= off + size; d += 16) {
        const tag = b.readBigUInt64LE(d);
        if (tag === 0n) break;
        if (tag === 1n) needs.push('DT_NEEDED (a shared library)');
      }
    }
  }
  return { machine, static: needs.length === 0, needs };
}

/** Mach-O facts: cputype, the dylibs it loads, and whether its code signature verifies. */
function macho(b) {
  if (b.length < 32 || b.readUInt32LE(0) !== 0xfeedfacf) return null;
  const cputype = b.readUInt32LE(4);
  const filetype = b.readUInt32LE(12);
  const ncmds = b.readUInt32LE(16);
  const dylibs = [];
  let signature = null;
  let off = 32;
  for (let i = 0; i < ncmds; i++) {
    const cmd = b.readUInt32LE(off);
    const size = b.readUInt32LE(off + 4);
    if (cmd === 0xc || cmd === 0x80000018 || cmd === 0x8000001f) {
      const at = off + b.readUInt32LE(off + 8);
      dylibs.push(b.subarray(at, off + size).toString('latin1').replace(/\0.*$/s, ''));
    }
    if (cmd === 0x1d) signature = { dataoff: b.readUInt32LE(off + 8), datasize: b.readUInt32LE(off + 12) };
    off += size;
  }
  return { cputype, filetype, dylibs, signature: signature && verifySignature(b, signature) };
}

/**
 * Verify an embedded code signature the way the kernel checks pages: the CodeDirectory must
 * cover the file up to the signature, and every page's hash must match. Returns a description,
 * or throws what is wrong. (Apple silicon kills an arm64 binary whose signature does not verify.)
 */
function verifySignature(b, { dataoff, datasize }) {
  const sb = b.subarray(dataoff, dataoff + datasize);
  if (sb.readUInt32BE(0) !== 0xfade0cc0) throw new Error('code signature: not a SuperBlob');
  const count = sb.readUInt32BE(8);
  for (let i = 0; i < count; i++) {
    if (sb.readUInt32BE(12 + i * 8) !== 0) continue; // CSSLOT_CODEDIRECTORY
    const cd = sb.subarray(sb.readUInt32BE(16 + i * 8));
    if (cd.readUInt32BE(0) !== 0xfade0c02) throw new Error('code signature: bad CodeDirectory');
    const flags = cd.readUInt32BE(12);
    const hashOffset = cd.readUInt32BE(16);
    const nCodeSlots = cd.readUInt32BE(28);
    const codeLimit = cd.readUInt32BE(32);
    const hashSize = cd[36];
    const algo = { 1: 'sha1', 2: 'sha256' }[cd[37]];
    const page = 2 ** cd[39];
    if (!algo) throw new Error(`code signature: hash type ${cd[37]}`);
    if (codeLimit !== dataoff) throw new Error(`code signature covers ${codeLimit} bytes, the code ends at ${dataoff}`);
    if (nCodeSlots !== Math.ceil(codeLimit / page)) throw new Error('code signature: wrong page count');
    for (let s = 0; s < nCodeSlots; s++) {
      const want = cd.subarray(hashOffset + s * hashSize, hashOffset + (s + 1) * hashSize);
      const got = crypto.createHash(algo).update(b.subarray(s * page, Math.min((s + 1) * page, codeLimit))).digest();
      if (!got.subarray(0, hashSize).equals(want)) throw new Error(`code signature: page ${s} does not match its hash`);
    }
    return `${flags & 2 ? 'ad-hoc ' : ''}signed, ${nCodeSlots} pages verified (${algo})`;
  }
  throw new Error('code signature: no CodeDirectory');
}

const ELF_MACHINE = { x86_64: 62, aarch64: 183 };
const MACHO_CPU = { x86_64: 0x01000007, aarch64: 0x0100000c };
const archOf = (target) => target.split('-')[0];

/**
 * What a pii or agent binary says its release is, read from the constant it prints (the agent's
 * announcement, protocol::hello::MAGIC_LINE; the first line of `pii --version`).
 */
function marker(data, kind) {
  const text = data.toString('latin1');
  if (kind === 'agent') {
    const m = /PI-BRIDGE-AGENT protocol=(\d+) version=([0-9A-Za-z.+-]+)\n/.exec(text);
    return m && { protocol: m[1], version: m[2] };
  }
  const m = /pii ([0-9A-Za-z.+-]+) \(protocol (\d+)\)/.exec(text);
  return m && { version: m[1], protocol: m[2] };
}

function checkBinary(what, data, target, kind, version, protocol) {
  const arch = archOf(target);
  const facts = [];
  if (target.includes('-linux-')) {
    const e = elf(data);
    if (!e) throw new Error(`${what}: not an ELF binary`);
    if (e.machine !== ELF_MACHINE[arch]) throw new Error(`${what}: ELF machine ${e.machine}, not ${arch} (${ELF_MACHINE[arch]})`);
    if (!e.static) throw new Error(`${what}: not static: ${e.needs.join(', ')}`);
    facts.push(`ELF ${arch}, static`);
  } else {
    const m = macho(data);
    if (!m) throw new Error(`${what}: not a 64-bit Mach-O binary`);
    if (m.cputype !== MACHO_CPU[arch]) throw new Error(`${what}: Mach-O cputype 0x${m.cputype.toString(16)}, not ${arch}`);
    if (m.filetype !== 2) throw new Error(`${what}: Mach-O filetype ${m.filetype}, not an executable`);
    const foreign = m.dylibs.filter((d) => !d.startsWith('/usr/lib/') && !d.startsWith('/System/'));
    if (foreign.length) throw new Error(`${what}: loads libraries a Mac does not have: ${foreign.join(', ')}`);
    if (arch === 'aarch64' && !m.signature) throw new Error(`${what}: arm64 Mach-O without a code signature (macOS would kill it)`);
    facts.push(`Mach-O ${arch}, ${m.signature || 'unsigned'}, links ${m.dylibs.join(' ')}`);
  }
  const found = marker(data, kind);
  if (!found) throw new Error(`${what}: no version announcement inside`);
  if (found.version !== version || found.protocol !== protocol) {
    throw new Error(`${what}: is version ${found.version} protocol ${found.protocol}, the release is ${version} protocol ${protocol}`);
  }
  facts.push(`${kind} ${found.version} protocol ${found.protocol}`);
  return facts.join('; ');
}

const INSTALL_HOOKS = ['preinstall', 'install', 'postinstall', 'prepare', 'preuninstall', 'uninstall', 'postuninstall'];

function check(dir, pii) {
  const version = workspaceVersion();
  const protocol = protocolVersion();
  const want = expected(pii, version);
  const wantFiles = new Set([...want.values()].map((e) => e.file));
  const present = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.tgz')) : [];
  const problems = [];
  for (const f of present) if (!wantFiles.has(f)) problems.push(`${f}: not a package of release ${version} for ${pii.map(platformId).join(',')}`);
  const sizes = [];
  for (const [name, e] of want) {
    const file = path.join(dir, e.file);
    if (!fs.existsSync(file)) {
      problems.push(`${e.file}: missing`);
      continue;
    }
    try {
      const files = untar(file);
      const manifest = JSON.parse(files.get('package.json')?.data.toString('utf8') ?? 'null');
      if (!manifest) throw new Error('no package.json');
      if (manifest.name !== name) throw new Error(`name ${manifest.name}, expected ${name}`);
      if (manifest.version !== version) throw new Error(`version ${manifest.version}, the workspace is ${version}`);
      const hooks = INSTALL_HOOKS.filter((h) => manifest.scripts?.[h]);
      if (hooks.length) throw new Error(`install scripts (${hooks.join(', ')}): the install must work with --ignore-scripts`);
      const exact = (deps, names, field) => {
        const got = Object.keys(deps || {}).sort();
        if (JSON.stringify(got) !== JSON.stringify([...names].sort())) throw new Error(`${field}: ${got.join(', ')}, expected ${names.join(', ')}`);
        for (const n of names) if (deps[n] !== version) throw new Error(`${field}.${n} is ${deps[n]}, not exactly ${version}`);
      };
      const exec = (p) => {
        const f = files.get(p);
        if (!f) throw new Error(`${p} missing`);
        if ((f.mode & 0o111) !== 0o111) throw new Error(`${p} is not executable (mode ${f.mode.toString(8)})`);
        return f.data;
      };
      const details = [];
      let content;
      if (e.kind === 'main') {
        if (manifest.bin?.pii !== 'bin/pii.js') throw new Error(`bin.pii is ${manifest.bin?.pii}`);
        exec('bin/pii.js');
        exact(manifest.optionalDependencies, platforms.pii.map(piiPackage), 'optionalDependencies');
        exact(manifest.dependencies, [], 'dependencies');
        content = ['bin/pii.js'];
        details.push(`launcher; optionalDependencies ${platforms.pii.map(platformId).join(', ')} @ ${version}`);
      } else if (e.kind === 'agents') {
        if (manifest.os || manifest.cpu) throw new Error('the agents run on the remote: no os/cpu restriction');
        content = platforms.agents.map((t) => `${t}/${AGENT}`);
        for (const t of platforms.agents) details.push(`${t}: ${checkBinary(`${t}/${AGENT}`, exec(`${t}/${AGENT}`), t, 'agent', version, protocol)}`);
      } else {
        const p = e.platform;
        if (JSON.stringify(manifest.os) !== JSON.stringify([p.os]) || JSON.stringify(manifest.cpu) !== JSON.stringify([p.cpu])) {
          throw new Error(`os ${manifest.os} cpu ${manifest.cpu}, expected ${p.os} ${p.cpu}`);
        }
        if (manifest.bin) throw new Error('a platform package has no bin (the launcher in pi-bridge is the command)');
        exact(manifest.dependencies, [AGENTS], 'dependencies');
        content = ['bin/pii'];
        details.push(checkBinary('bin/pii', exec('bin/pii'), p.target, 'pii', version, protocol));
      }
      const extra = [...files.keys()].filter((f) => !['package.json', 'README.md', ...content].includes(f));
      if (extra.length) throw new Error(`unexpected files: ${extra.join(', ')}`);
      const unpacked = [...files.values()].reduce((n, f) => n + f.data.length, 0);
      sizes.push({ name, file: e.file, packed: fs.statSync(file).size, unpacked });
      console.log(`ok ${e.file}: ${details.join('; ')}`);
    } catch (err) {
      problems.push(`${e.file}: ${err.message}`);
    }
  }
  if (problems.length) die(`check failed:\n  ${problems.join('\n  ')}`);
  const mb = (n) => (n < 1e6 ? `${(n / 1e3).toFixed(1)} kB` : `${(n / 1e6).toFixed(2)} MB`);
  console.log('\npackage                      tarball   unpacked');
  for (const s of sizes) console.log(`${s.name.padEnd(28)} ${mb(s.packed).padStart(8)} ${mb(s.unpacked).padStart(10)}`);
  console.log(`\nall ${sizes.length} packages of pi-bridge ${version} (protocol ${protocol}) verified`);
}

const [cmd, a, b] = process.argv.slice(2);
if (cmd === 'builds' && a) builds(selected(a));
else if (cmd === 'stage' && a && b) stage(path.resolve(a), selected(b));
else if (cmd === 'check' && a && b) check(path.resolve(a), selected(b));
else die('usage: node scripts/dist.cjs builds <platforms> | stage <dir> <platforms> | check <dir> <platforms>');
