// Writes 2-D arrays as NumPy .npy files (format version 1.0, little-endian, C order).
'use strict';

const fs = require('node:fs');

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE 754 binary16 bits of a number, rounded to nearest, ties to even (as NumPy does). */
function toHalfBits(value) {
  f32[0] = value;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp32 = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;

  if (exp32 === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // infinity or NaN
  const exp = exp32 - 127 + 15;
  if (exp >= 0x1f) return sign | 0x7c00; // too large: infinity
  if (exp <= 0) {
    // Subnormal half (or zero): shift the mantissa with its implicit bit into place.
    if (exp < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - exp;
    let half = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    const midway = 1 << (shift - 1);
    if (rest > midway || (rest === midway && (half & 1))) half += 1;
    return sign | half;
  }
  let half = (exp << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (half & 1))) half += 1; // a carry rounds up the exponent
  return sign | half;
}

/** Builds the .npy header for a C-order array of dtype descr ('<f2' or '<f4') and shape. */
function header(descr, shape) {
  const dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(', ')}), }`;
  // Magic (6) + version (2) + header length (2) + dict + padding + '\n' is a multiple of 64.
  const unpadded = 10 + dict.length + 1;
  const padded = Math.ceil(unpadded / 64) * 64;
  const text = dict + ' '.repeat(padded - unpadded) + '\n';
  const buf = Buffer.alloc(10 + text.length);
  buf.write('\x93NUMPY', 0, 'latin1');
  buf[6] = 1;
  buf[7] = 0;
  buf.writeUInt16LE(text.length, 8);
  buf.write(text, 10, 'latin1');
  return buf;
}

/**
 * Writes rows x cols values from `values` (a Float32Array or Float64Array, row-major) to `file`
 * as float16 ('float16') or float32 ('float32').
 */
function writeMatrix(file, values, rows, cols, dtype) {
  if (values.length !== rows * cols) {
    throw new Error(`${file}: ${values.length} values do not fill a ${rows}x${cols} matrix`);
  }
  let body;
  if (dtype === 'float16') {
    body = Buffer.alloc(values.length * 2);
    for (let i = 0; i < values.length; i++) body.writeUInt16LE(toHalfBits(values[i]), i * 2);
  } else if (dtype === 'float32') {
    body = Buffer.alloc(values.length * 4);
    for (let i = 0; i < values.length; i++) body.writeFloatLE(values[i], i * 4);
  } else {
    throw new Error(`dtype "${dtype}" is not supported; use float16 or float32`);
  }
  const descr = dtype === 'float16' ? '<f2' : '<f4';
  fs.writeFileSync(file, Buffer.concat([header(descr, [rows, cols]), body]));
}

module.exports = { toHalfBits, writeMatrix };
