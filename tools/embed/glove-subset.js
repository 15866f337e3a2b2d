#!/usr/bin/env node
// Writes the GloVe subset that ships with the sample, so free-text queries can be embedded
// without npm (tools/embed/text_query.py reads it).
//
//   node glove-subset.js --items items.jsonl --out DIR [--top 20000]
//
// The subset contains every caption word of items.jsonl found in GloVe plus the `top` most
// frequent GloVe words a query can produce (tokens of text.js: a-z, two letters or more, not a
// stop word; so no punctuation or numbers), in GloVe order (most frequent first). DIR gets
// vectors.npy ([V, 100] float16, each row the unit-length word vector text.js averages) and
// words.txt (V lines).
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const text = require('./text.js');
const npy = require('./npy.js');

const USAGE = 'usage: node glove-subset.js --items FILE --out DIR [--top N]\n' +
  '  --items  JSON lines with a caption per item (the items.jsonl embed.js writes)\n' +
  '  --out    output folder for vectors.npy and words.txt\n' +
  '  --top    also keep the N most frequent GloVe words that are tokens (default 20000)';

function parseArgs(argv) {
  const opts = { top: 20000 };
  for (let i = 0; i < argv.length; i += 2) {
    const [key, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`option ${key} needs a value\n${USAGE}`);
    if (key === '--items') opts.items = value;
    else if (key === '--out') opts.out = value;
    else if (key === '--top') opts.top = Number(value);
    else throw new Error(`unknown option ${key}\n${USAGE}`);
  }
  if (!opts.items || !opts.out) throw new Error(`--items and --out are required\n${USAGE}`);
  if (!Number.isInteger(opts.top) || opts.top < 0) {
    throw new Error(`--top ${opts.top} is invalid; give a whole number of words`);
  }
  return opts;
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const glove = text.loadGlove();

  // Step 1: the caption words found in GloVe, plus the most frequent words.
  const keep = new Set();
  const lines = fs.readFileSync(opts.items, 'utf8').split('\n').filter((l) => l.trim() !== '');
  for (const line of lines) {
    for (const w of text.tokenize(JSON.parse(line).caption)) {
      if (glove.vectors.has(w)) keep.add(w);
    }
  }
  const captionWords = keep.size;
  const byRank = [...glove.rank.keys()].sort((a, b) => glove.rank.get(a) - glove.rank.get(b));
  let added = 0;
  for (const w of byRank) {
    if (added === opts.top) break;
    const tokens = text.tokenize(w);
    if (tokens.length !== 1 || tokens[0] !== w) continue; // a query can never produce it
    keep.add(w);
    added += 1;
  }

  // Step 2: write them in GloVe order.
  const words = [...keep].sort((a, b) => glove.rank.get(a) - glove.rank.get(b));
  const values = new Float64Array(words.length * text.DIM);
  words.forEach((w, i) => values.set(glove.vectors.get(w), i * text.DIM));
  fs.mkdirSync(opts.out, { recursive: true });
  npy.writeMatrix(path.join(opts.out, 'vectors.npy'), values, words.length, text.DIM, 'float16');
  fs.writeFileSync(path.join(opts.out, 'words.txt'), words.map((w) => `${w}\n`).join(''));
  process.stderr.write(`glove-subset: ${words.length} words (${captionWords} from captions, ` +
    `top ${opts.top}) written to ${opts.out}\n`);
}

try {
  main();
} catch (e) {
  console.error(`glove-subset: failed: ${e.message}`);
  process.exit(1);
}
