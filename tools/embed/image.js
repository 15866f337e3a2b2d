// Image encoder: the CenterNet detector with a MobileNetV3 backbone (COCO, 2.0 M parameters),
// run with TensorFlow.js on its WebAssembly backend.
//
// An image becomes a 480-d vector in three steps:
//   1. decode with sharp (PNG, JPEG, WebP, GIF, or SVG rasterised near 512 px), flatten any
//      transparency onto white;
//   2. letterbox onto a white 512x512 canvas (aspect kept, centred), RGB values 0-255 as float;
//   3. run the graph up to the node tower_0/extern1/hard_swish/mul_1 (1x16x16x480, the last
//      backbone stage) and average over the 16x16 positions.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const sharp = require('sharp');
const tf = require('@tensorflow/tfjs');
const tfwasm = require('@tensorflow/tfjs-backend-wasm');

const SIZE = 512;
const DIM = 480;
const FEATURE_NODE = 'tower_0/extern1/hard_swish/mul_1';
const MODEL_DIR = path.join(__dirname, 'model');
const WHITE = { r: 255, g: 255, b: 255, alpha: 1 };
// Images whose letterboxed pixels all lie within this many levels of each other are blank: some
// packaged PNGs are fully transparent because their rasterisation failed.
const BLANK_RANGE = 8;

/**
 * Starts TensorFlow.js on the WebAssembly backend with one thread and loads the graph from
 * model/centernet.json and its weight files (written by fetch-model.js).
 * Returns the tf.GraphModel.
 */
async function loadModel(modelDir = MODEL_DIR) {
  tfwasm.setThreadsCount(1);
  if (!(await tf.setBackend('wasm'))) {
    throw new Error('the TensorFlow.js WebAssembly backend failed to start');
  }
  await tf.ready();

  const jsonFile = path.join(modelDir, 'centernet.json');
  if (!fs.existsSync(jsonFile)) {
    throw new Error(`${jsonFile} not found; run "node fetch-model.js" first`);
  }
  const json = JSON.parse(fs.readFileSync(jsonFile, 'utf8'));
  const weightSpecs = json.weightsManifest.flatMap((group) => group.weights);
  const buffers = json.weightsManifest.flatMap((group) =>
    group.paths.map((p) => fs.readFileSync(path.join(modelDir, p))));
  const all = Buffer.concat(buffers);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);

  const handler = {
    load: async () => ({
      modelTopology: json.modelTopology,
      format: json.format,
      generatedBy: json.generatedBy,
      convertedBy: json.convertedBy,
      signature: json.signature,
      weightSpecs,
      weightData,
    }),
  };
  return tf.loadGraphModel(handler);
}

/** Rasterisation density (dpi) that brings an SVG's longer side near SIZE pixels. */
async function svgDensity(file) {
  const meta = await sharp(file, { limitInputPixels: false }).metadata();
  const longer = Math.max(meta.width || SIZE, meta.height || SIZE);
  const density = (72 * SIZE) / longer;
  return Math.min(Math.max(density, 1), 100000);
}

/**
 * Decodes an image file and letterboxes it onto white (steps 1-2 above).
 * Returns a Float32Array of SIZE*SIZE*3 RGB values in 0-255, row-major (HWC). Throws if the
 * file cannot be decoded or the result is blank (one colour); the message omits the file name.
 */
async function loadPixels(file) {
  const options = { limitInputPixels: false };
  if (file.toLowerCase().endsWith('.svg')) options.density = await svgDensity(file);

  const { data, info } = await sharp(file, options)
    .flatten({ background: WHITE })
    .resize(SIZE, SIZE, { fit: 'contain', background: WHITE })
    .toColourspace('srgb')
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.width !== SIZE || info.height !== SIZE || info.channels !== 3) {
    throw new Error(`decoded to ${info.width}x${info.height}x${info.channels}, ` +
      `expected ${SIZE}x${SIZE}x3`);
  }
  let low = 255;
  let high = 0;
  for (const value of data) {
    if (value < low) low = value;
    if (value > high) high = value;
  }
  if (high - low < BLANK_RANGE) {
    throw new Error(`blank after flattening onto white (all pixels ${low}-${high})`);
  }
  return Float32Array.from(data);
}

/** Runs the model on SIZE*SIZE*3 pixels (step 3 above). Returns a Float32Array(DIM). */
function embedPixels(model, pixels) {
  const pooled = tf.tidy(() => {
    const input = tf.tensor4d(pixels, [1, SIZE, SIZE, 3], 'float32');
    const feature = model.execute(input, FEATURE_NODE);
    return feature.mean([1, 2]);
  });
  const vector = pooled.dataSync().slice();
  pooled.dispose();
  if (vector.length !== DIM) {
    throw new Error(`feature ${FEATURE_NODE} has ${vector.length} values, expected ${DIM}`);
  }
  return vector;
}

module.exports = { SIZE, DIM, FEATURE_NODE, loadModel, loadPixels, embedPixels };
