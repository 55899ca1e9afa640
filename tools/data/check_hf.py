#!/usr/bin/env python3
"""Check that Hugging Face `tokenizers` encodes like our C loader with models/ctx-small/tokenizer.json.

Runs where `tokenizers` is installed (the GPU machine). heldout_code.jsonl carries the ids that
inf_tokenizer_encode (literal mode) gave for every text; texts that spell an added token are skipped
(literal mode keeps those as text, HF matches them). Also checks every added token encodes to its id.
Usage: check_hf.py TOKENIZER.json build-data/heldout_code.jsonl   (exit 0 when all equal)
"""
import json
import sys

from tokenizers import Tokenizer

tok = Tokenizer.from_file(sys.argv[1])
spec = json.load(open(sys.argv[1], encoding="utf-8"))
added = [a["content"] for a in spec["added_tokens"]]
bad = same = skipped = 0
for a in spec["added_tokens"]:
    ids = tok.encode(a["content"], add_special_tokens=False).ids
    if ids != [a["id"]]:
        bad += 1
        print("added token", a["content"], "->", ids, "want", [a["id"]])
for line in open(sys.argv[2], encoding="utf-8"):
    o = json.loads(line)
    if any(s in o["text"] for s in added):
        skipped += 1
        continue
    ids = tok.encode(o["text"], add_special_tokens=False).ids
    if ids == o["tokens"]:
        same += 1
    else:
        bad += 1
        k = next(i for i, (x, y) in enumerate(zip(ids + [-1], o["tokens"] + [-2])) if x != y)
        print("DIFF", o["path"], "at token", k, ids[k:k + 8], o["tokens"][k:k + 8])
print(f"hf_equal={same} different={bad} skipped={skipped} vocab={tok.get_vocab_size()}")
sys.exit(1 if bad else 0)
