// LanceDB search QPS and recall@10 on the workload of bench/store_bench.c: N random unit vectors
// of 256 dims, NQ other random unit vectors as queries, k = 10, one query per call, in-process
// on a local directory. The exact answers come from LanceDB's own brute-force scan
// (bypassVectorIndex), which is also the Flat row. IVF_FLAT with 1024 partitions is then
// searched at nprobes 64 and 256, the IVF settings store_bench reports for altmoe.
//
// Usage: node bench.mjs [N [NQ]]   (defaults 100000 and 1000)
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as lancedb from "@lancedb/lancedb";

const DIM = 256;
const K = 10;
const N = Number(process.argv[2] ?? 100000);
const NQ = Number(process.argv[3] ?? 1000);
const INGEST_BATCH = 10000;

// Returns a seeded uniform generator in [0, 1) (mulberry32).
function mulberry32(seed) {
    let a = seed >>> 0;
    return () => {
        a = (a + 0x6d2b79f5) >>> 0;
        let t = a;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}

// Returns count random unit vectors (Gaussian components, then normalised) as Float32Arrays.
function randomUnit(count, next) {
    const out = [];
    for (let i = 0; i < count; i++) {
        const v = new Float32Array(DIM);
        let norm = 0;
        for (let j = 0; j < DIM; j++) {
            const g = Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
            v[j] = g;
            norm += g * g;
        }
        norm = Math.sqrt(norm);
        for (let j = 0; j < DIM; j++) v[j] /= norm;
        out.push(v);
    }
    return out;
}

// Runs every query once and returns {qps, ids}. configure sets the search options of a query.
async function searchAll(table, queries, configure) {
    const ids = [];
    const start = process.hrtime.bigint();
    for (const q of queries) {
        const rows = await configure(table.vectorSearch(q).distanceType("dot").limit(K).select(["id", "_distance"])).toArray();
        ids.push(rows.map((r) => r.id));
    }
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    return { qps: queries.length / seconds, ids };
}

function recallAt10(ids, truth) {
    let hits = 0;
    for (let i = 0; i < ids.length; i++) {
        const want = new Set(truth[i]);
        hits += ids[i].filter((id) => want.has(id)).length;
    }
    return hits / (ids.length * K);
}

async function main() {
    const next = mulberry32(7);
    const base = randomUnit(N, next);
    const queries = randomUnit(NQ, next);
    const dir = mkdtempSync(join(tmpdir(), "altmoe-lancedb-"));
    try {
        const db = await lancedb.connect(dir);
        let start = process.hrtime.bigint();
        let table = null;
        for (let i = 0; i < N; i += INGEST_BATCH) {
            const rows = base.slice(i, i + INGEST_BATCH).map((v, j) => ({ id: i + j, vector: Array.from(v) }));
            if (table === null) table = await db.createTable("vec", rows, { mode: "overwrite" });
            else await table.add(rows);
        }
        const ingestSeconds = Number(process.hrtime.bigint() - start) / 1e9;
        console.log(`== LanceDB (@lancedb/lancedb, Node.js ${process.version}) on ${N} random unit vectors of ${DIM} dims, ${NQ} queries, k = ${K}, batch 1`);
        console.log(`ingest: ${(N / ingestSeconds).toFixed(0)} vectors/s (${INGEST_BATCH} rows per add)`);
        console.log();
        console.log("| index | build | QPS batch 1 | recall@10 |");
        console.log("|---|---|---|---|");

        const flat = await searchAll(table, queries, (q) => q.bypassVectorIndex());
        console.log(`| brute force (no index) | 0 s | ${flat.qps.toFixed(0)} | 1.000 |`);

        start = process.hrtime.bigint();
        await table.createIndex("vector", {
            config: lancedb.Index.ivfFlat({ numPartitions: 1024, distanceType: "dot" }),
        });
        const build = Number(process.hrtime.bigint() - start) / 1e9;
        for (const nprobes of [64, 256]) {
            const r = await searchAll(table, queries, (q) => q.nprobes(nprobes));
            const label = nprobes === 64 ? `${build.toFixed(1)} s` : "";
            console.log(`| IVF_FLAT 1024 (nprobes ${nprobes}) | ${label} | ${r.qps.toFixed(0)} | ${recallAt10(r.ids, flat.ids).toFixed(3)} |`);
        }
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
}

await main();
