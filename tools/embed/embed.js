#!/usr/bin/env node
// Turns an image + caption manifest into embeddings for altmoe.
//
//   node embed.js --manifest items.jsonl --out DIR [--jobs N] [--dtype float16|float32]
//                 [--limit N]
//
// The manifest is JSON lines, one object per item with at least `id`, `caption` and `image` (a
// path to a PNG, JPEG or SVG file, relative paths taken from the manifest's folder). DIR gets:
//   image.npy    [N, 480] CenterNet/MobileNetV3 features (see image.js)
//   text.npy     [N, 100] GloVe caption vectors (see text.js)
//   items.jsonl  the manifest objects of the N embedded items, rows aligned with the .npy files
//   skipped.jsonl the items left out, each with the reason (only when there are some): no caption
//                 word in GloVe, an image that fails to decode or is blank, or an image vector
//                 equal to an earlier item's (the same picture in another file)
// Captions are embedded first in this process; images are then spread over N worker processes
// (one WebAssembly thread each), and progress is printed to stderr.
'use strict';

const { fork } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const text = require('./text.js');
const npy = require('./npy.js');

const USAGE = 'usage: node embed.js --manifest FILE --out DIR [--jobs N] ' +
  '[--dtype float16|float32] [--limit N]\n' +
  '  --manifest  JSON lines with id, caption and image (path) per item\n' +
  '  --out       output folder for image.npy, text.npy, items.jsonl\n' +
  '  --jobs      image worker processes, one core each (default 1)\n' +
  '  --dtype     element type of the .npy files (default float16)\n' +
  '  --limit     embed only the first N manifest items (default all)';
const IN_FLIGHT = 2; // items sent ahead to each worker, so it rarely waits for the next one

function parseArgs(argv) {
  const opts = { jobs: 1, dtype: 'float16', limit: Infinity };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i];
    const value = argv[i + 1];
    if (key === '--help' || key === '-h') {
      console.log(USAGE);
      process.exit(0);
    }
    if (value === undefined) throw new Error(`option ${key} needs a value\n${USAGE}`);
    i += 1;
    if (key === '--manifest') opts.manifest = value;
    else if (key === '--out') opts.out = value;
    else if (key === '--jobs') opts.jobs = Number(value);
    else if (key === '--dtype') opts.dtype = value;
    else if (key === '--limit') opts.limit = Number(value);
    else throw new Error(`unknown option ${key}\n${USAGE}`);
  }
  if (!opts.manifest || !opts.out) throw new Error(`--manifest and --out are required\n${USAGE}`);
  if (!Number.isInteger(opts.jobs) || opts.jobs < 1 || opts.jobs > 64) {
    throw new Error(`--jobs ${opts.jobs} is invalid; give a whole number from 1 to 64`);
  }
  if (opts.dtype !== 'float16' && opts.dtype !== 'float32') {
    throw new Error(`--dtype ${opts.dtype} is invalid; use float16 or float32`);
  }
  if (!(opts.limit > 0)) throw new Error(`--limit ${opts.limit} is invalid; give a positive count`);
  return opts;
}

/** Reads the manifest; returns its objects with `image` made absolute in `imagePath`. */
function readManifest(file, limit) {
  if (!fs.existsSync(file)) throw new Error(`manifest ${file} not found; build one first`);
  const base = path.dirname(path.resolve(file));
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '');
  return lines.slice(0, limit).map((line, i) => {
    let item;
    try {
      item = JSON.parse(line);
    } catch (e) {
      throw new Error(`${file} line ${i + 1} is not valid JSON: ${e.message}`);
    }
    for (const key of ['id', 'caption', 'image']) {
      if (typeof item[key] !== 'string' || item[key] === '') {
        throw new Error(`${file} line ${i + 1} is missing the string field "${key}"`);
      }
    }
    return { item, imagePath: path.resolve(base, item.image) };
  });
}

function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) return '?';
  const total = Math.round(seconds);
  const m = Math.floor(total / 60);
  const s = total % 60;
  return m > 0 ? `${m}m${String(s).padStart(2, '0')}s` : `${s}s`;
}

/** Makes a progress printer that writes at most one line every two seconds, plus the last one. */
function progressReporter(label, total) {
  const start = Date.now();
  let last = 0;
  return (done) => {
    const now = Date.now();
    if (done < total && now - last < 2000) return;
    last = now;
    const elapsed = (now - start) / 1000;
    const rate = done / Math.max(elapsed, 1e-3);
    const eta = (total - done) / Math.max(rate, 1e-9);
    const pct = ((100 * done) / Math.max(total, 1)).toFixed(1);
    process.stderr.write(`${label}: ${done}/${total} (${pct}%), ${rate.toFixed(1)}/s, ` +
      `elapsed ${formatDuration(elapsed)}, eta ${formatDuration(eta)}\n`);
  };
}

/** Embeds every caption. Returns a unit Float64Array(100) per entry, or null if none is known. */
function embedCaptions(entries) {
  const start = Date.now();
  process.stderr.write('text: loading GloVe 100-d (about 5 s, 1 GB)\n');
  const glove = text.loadGlove();
  const took = formatDuration((Date.now() - start) / 1000);
  process.stderr.write(`text: ${glove.vectors.size} words loaded in ${took}\n`);
  const vectors = entries.map((e) => {
    const encoded = text.encode(glove, e.item.caption);
    return encoded ? encoded.vector : null;
  });
  process.stderr.write(`text: ${entries.length} captions embedded\n`);
  return vectors;
}

/**
 * Embeds the images of `entries` with `jobs` worker processes.
 * Resolves to an array holding a Float32Array(480) or an error message per entry.
 */
function embedImages(entries, jobs) {
  return new Promise((resolve, reject) => {
    const results = new Array(entries.length).fill(undefined);
    const report = progressReporter('image', entries.length);
    let next = 0;
    let done = 0;
    let live = 0;

    // Sends the worker its next item, or once the queue is empty, a single stop message.
    const feed = (worker) => {
      if (next < entries.length) {
        worker.send({ index: next, file: entries[next].imagePath });
        next += 1;
      } else if (!worker.stopSent) {
        worker.stopSent = true;
        worker.send({ stop: true });
      }
    };

    const workerCount = Math.min(jobs, entries.length);
    if (workerCount === 0) resolve(results);
    for (let w = 0; w < workerCount; w++) {
      const worker = fork(path.join(__dirname, 'embed-worker.js'), [], { stdio: 'inherit' });
      live += 1;
      worker.on('message', (msg) => {
        if (msg.error !== undefined) {
          process.stderr.write(`image: skipping ${entries[msg.index].item.id}: ${msg.error}\n`);
        }
        results[msg.index] = msg.error !== undefined ? msg.error : Float32Array.from(msg.vector);
        done += 1;
        report(done);
        feed(worker);
      });
      worker.on('exit', (code) => {
        live -= 1;
        if (code !== 0) {
          reject(new Error(`image worker ${w} exited with status ${code}`));
          return;
        }
        if (live === 0) resolve(results);
      });
      for (let k = 0; k < IN_FLIGHT; k++) feed(worker);
    }
  });
}

function writeOutputs(opts, kept, imageRows, textRows, skipped) {
  fs.mkdirSync(opts.out, { recursive: true });
  const n = kept.length;
  const imageDim = n > 0 ? imageRows[0].length : 480;
  const image = new Float32Array(n * imageDim);
  const caption = new Float64Array(n * text.DIM);
  for (let i = 0; i < n; i++) {
    image.set(imageRows[i], i * imageDim);
    caption.set(textRows[i], i * text.DIM);
  }
  npy.writeMatrix(path.join(opts.out, 'image.npy'), image, n, imageDim, opts.dtype);
  npy.writeMatrix(path.join(opts.out, 'text.npy'), caption, n, text.DIM, opts.dtype);
  fs.writeFileSync(path.join(opts.out, 'items.jsonl'),
    kept.map((e) => `${JSON.stringify(e.item)}\n`).join(''));

  const skippedFile = path.join(opts.out, 'skipped.jsonl');
  if (skipped.length > 0) {
    fs.writeFileSync(skippedFile, skipped.map((s) => `${JSON.stringify(s)}\n`).join(''));
  } else if (fs.existsSync(skippedFile)) {
    fs.unlinkSync(skippedFile);
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const entries = readManifest(opts.manifest, opts.limit);
  process.stderr.write(`embed: ${entries.length} items from ${opts.manifest}, ` +
    `${opts.jobs} job(s), ` +
    `${opts.dtype}, ${os.cpus().length} cores\n`);

  // Step 1: captions (in this process); items without a known word are skipped.
  const textVectors = embedCaptions(entries);

  // Step 2: images of the items that kept a caption vector.
  const withText = entries.filter((_, i) => textVectors[i] !== null);
  const imageResults = await embedImages(withText, opts.jobs);
  const imageOf = new Map(withText.map((e, i) => [e, imageResults[i]]));

  // Step 3: keep the items that have both vectors and a new image vector, in manifest order.
  const kept = [];
  const imageRows = [];
  const textRows = [];
  const skipped = [];
  const firstWithVector = new Map();
  entries.forEach((e, i) => {
    const t = textVectors[i];
    if (t === null) {
      skipped.push({ id: e.item.id, reason: 'no caption word is in the GloVe vocabulary' });
      return;
    }
    const r = imageOf.get(e);
    if (typeof r === 'string') {
      skipped.push({ id: e.item.id, reason: r });
      return;
    }
    const key = Buffer.from(r.buffer, r.byteOffset, r.byteLength).toString('base64');
    if (firstWithVector.has(key)) {
      skipped.push({ id: e.item.id, reason: `same image vector as ${firstWithVector.get(key)}` });
      return;
    }
    firstWithVector.set(key, e.item.id);
    kept.push(e);
    imageRows.push(r);
    textRows.push(t);
  });

  // Step 4: write.
  writeOutputs(opts, kept, imageRows, textRows, skipped);
  process.stderr.write(`embed: wrote ${kept.length} items to ${opts.out}` +
    (skipped.length ? `, skipped ${skipped.length} (see skipped.jsonl)` : '') + '\n');
}

main().catch((e) => {
  console.error(`embed: failed: ${e.message}`);
  process.exit(1);
});
