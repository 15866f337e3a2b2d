// Image worker for embed.js. It loads the model once, then replies to each {index, file}
// message with {index, vector} (480 numbers) or {index, error}, and exits on {stop: true}.
'use strict';

const image = require('./image.js');

// The listener is attached at once, so no message is lost while the model loads. Messages are
// handled one at a time, in the order they arrive, once the model is ready.
let chain = image.loadModel().catch((e) => {
  console.error(`embed-worker: failed to load the model: ${e.message}`);
  process.exit(1);
});

process.on('message', (msg) => {
  chain = chain.then(async (model) => {
    if (msg.stop) {
      process.disconnect();
      return model;
    }
    try {
      const pixels = await image.loadPixels(msg.file);
      const vector = image.embedPixels(model, pixels);
      process.send({ index: msg.index, vector: Array.from(vector) });
    } catch (e) {
      process.send({ index: msg.index, error: `${msg.file}: ${e.message}` });
    }
    return model;
  });
});
