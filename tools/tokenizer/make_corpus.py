#!/usr/bin/env python3
"""Write the tokenizer test corpus (tests/fixtures/tokenizer/corpus.json): a list of
{"name", "text"} cases chosen to exercise every branch of the pre-tokenizer and the added-token
splitter. Deterministic (seeded); run it here, then run golden.py on the GPU machine to get ids.

usage: make_corpus.py OUT.json [REPO_ROOT]
"""
import json
import os
import random
import sys

CODE = {
    "c": 'static int parse(const char *s, size_t n) {\n\tfor (size_t i = 0; i < n; i++) {\n\t\tif (s[i] == \'\\\\\') return -1; /* escape */\n\t}\n\treturn n > 0x7fff ? -E2BIG : 0;\n}\n',
    "cpp": 'template <typename T>\nstd::vector<T> take(const std::vector<T>& v, std::size_t n) {\n  return {v.begin(), v.begin() + std::min(n, v.size())};\n}\n// ::operator<<(std::ostream&)\n',
    "rust": 'fn main() -> Result<(), Box<dyn std::error::Error>> {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!("{:?} {}", v, v.iter().sum::<u32>());\n    Ok(())\n}\n',
    "go": 'package main\n\nimport "fmt"\n\nfunc main() {\n\tch := make(chan int, 3)\n\tgo func() { ch <- 42 }()\n\tfmt.Printf("%d\\n", <-ch)\n}\n',
    "python": 'def fib(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\nprint(f"{fib(100):,}")  # 354,224,848,179,261,915,075\n',
    "js": "const f = async (x) => { await fetch(`/api/${x}?q=1&r=2`); return x?.y ?? 0; };\nexport default f;\n",
    "ts": "interface Foo<T extends object = {}> { readonly id: number; tags?: string[]; map: Map<string, T> }\n",
    "java": 'public final class Main {\n    public static void main(String[] args) throws Exception {\n        System.out.println(String.format("%08.3f", Math.PI));\n    }\n}\n',
    "haskell": "module Main where\nimport qualified Data.Map as M\nmain :: IO ()\nmain = print . M.toList $ M.fromListWith (+) [(c, 1 :: Int) | c <- \"mississippi\"]\n",
    "lisp": "(defun fact (n) (if (<= n 1) 1 (* n (fact (- n 1)))))\n(format t \"~a~%\" (fact 20))\n",
    "sql": "SELECT u.id, COUNT(*) AS n FROM users u LEFT JOIN orders o ON o.user_id = u.id\nWHERE u.created_at >= '2024-01-01' GROUP BY u.id HAVING n > 3 ORDER BY n DESC;\n",
    "shell": '#!/bin/sh\nset -eu\nfor f in "$@"; do\n  [ -f "$f" ] || continue\n  sed -e \'s/\\t/  /g\' "$f" > "$f.tmp" && mv "$f.tmp" "$f"\ndone 2>&1 | tee -a /tmp/log\n',
    "html": '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Test &amp; more</title></head>\n<body><div class="a b" id=\'x\'>&lt;p&gt; text&nbsp;</div></body></html>\n',
    "css": ".btn:hover > span::after { content: \"\\201C\"; margin: -0.5em 0 0 calc(100% - 12px); color: #ff00aa; }\n",
    "lua": "local t = setmetatable({}, { __index = function(_, k) return k * 2 end })\nprint(t[21], #\"abc\", 10 // 3, 2^10)\n",
    "ruby": "class Foo < Bar\n  attr_reader :x\n  def initialize(x) = @x = x\nend\nputs [1, 2, 3].map { |v| v ** 2 }.sum\n",
    "kotlin": 'data class P(val x: Int, val y: Int)\nfun main() = println(listOf(P(1, 2), P(3, 4)).sumOf { it.x * it.y })\n',
    "swift": 'let xs = [3, 1, 2].sorted(by: <)\nguard let first = xs.first else { fatalError("empty") }\nprint("\\(first)")\n',
    "asm": "_start:\n\tmov rax, 60\n\txor edi, edi\n\tsyscall\n.section .data\nmsg: .asciz \"hi\\n\"\n",
    "makefile": "CFLAGS ?= -O2 -Wall\n%.o: %.c\n\t$(CC) $(CFLAGS) -c $< -o $@\n.PHONY: all clean\n",
    "yaml": "name: ci\non: [push, pull_request]\njobs:\n  build:\n    runs-on: ubuntu-24.04\n    steps:\n      - uses: actions/checkout@v4\n      - run: meson setup b && ninja -C b\n",
    "json": '{"a": [1, 2.5e-3, -0, true, null], "b": {"c": "d\\u00e9\\n"}, "e": []}\n',
    "latex": "\\begin{equation}\n  \\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}\n\\end{equation}\n",
    "markdown": "# Title\n\n- item **bold** _it_ `code`\n- [link](https://example.com/a?b=c#d)\n\n```c\nint x;\n```\n\n> quote\n",
    "diff": "--- a/x.c\n+++ b/x.c\n@@ -1,3 +1,3 @@\n-int a = 1;\n+int a = 2;\n int b;\n",
}

UNICODE = {
    "cjk_zh": "机器学习是人工智能的一个分支。它使用统计方法让计算机从数据中学习，而不是显式编程。",
    "cjk_ja": "日本語のテキスト：ひらがな、カタカナ、漢字を混ぜた文です。ｶﾀｶﾅ（半角）も。",
    "korean": "한국어 텍스트입니다. 토크나이저 테스트를 위한 문장입니다.",
    "arabic": "مرحبا بالعالم! هذا نص عربي مع أرقام ١٢٣٤٥ وعلامات ترقيم؟",
    "hebrew": "שלום עולם — טקסט בעברית עם ניקוד: בְּרֵאשִׁית",
    "devanagari": "नमस्ते दुनिया। यह हिन्दी पाठ है, संख्याएँ ०१२३४५।",
    "thai": "สวัสดีชาวโลก ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
    "cyrillic_greek": "Привет, мир! Ελληνικά: αβγδε ΑΒΓΔΕ. Ёжик в тумане.",
    "emoji": "emoji 🚀🔥 family 👨‍👩‍👧‍👦 flags 🇯🇵🇫🇷 skin 👍🏽 keycap 1️⃣ ♥️",
    "combining": "e\u0301 a\u0300 n\u0303 o\u0308 Z\u0351\u0352\u0353 ﬁ ligature ß ẞ",
    "math": "∀x∈ℝ: x² ≥ 0 ⇒ √(x²) = |x|; ∑ᵢ aᵢ ≤ ∞ ≠ ∅ ⊂ ℕ ∘ ∫∮",
    "fullwidth": "ＡＢＣ１２３！？（）　全角スペース　ｈｅｌｌｏ",
    "spaces": "a\u00a0b\u2000c\u2003d\u2009e\u200bf\u3000g\u202fh\u2028i\u2029j\ufeffk",
    "controls": "bell\x07 esc\x1b[0m del\x7f vt\x0b ff\x0c end",
    "rtl_marks": "abc\u200fdef\u200eghi\u202ejkl\u202c",
    "currency": "$100 €50 £20 ¥1000 ₹500 ₿0.5 ¢",
    "mixed_scripts": "The 東京 Tower (東京タワー) is 333m tall; Москва is 莫斯科.",
}

SPECIALS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<｜User｜>",
            "<｜Assistant｜>", "<|EOT|>", "<｜fim▁hole｜>", "<｜fim▁begin｜>", "<｜fim▁end｜>",
            "<｜tool▁calls▁begin｜>", "<｜place▁holder▁no▁7｜>", "<think>", "</think>", "｜DSML｜",
            "<｜latest_reminder｜>", "<｜action｜>", "<｜query｜>", "<｜title｜>", "<｜read_url｜>",
            "<dsml:", "</dsml:", "<｜begin▁sys｜>", "<|place_holder_mm_span_0021|>",
            "<|place_holder_mm_span_0435|>"]


def main():
    out = sys.argv[1]
    root = sys.argv[2] if len(sys.argv) > 2 else None
    rnd = random.Random(20261128)
    cases = []

    def add(name, text):
        cases.append({"name": name, "text": text})

    add("empty", "")
    add("one_space", " ")
    add("one_newline", "\n")
    add("one_letter", "a")
    for k, v in CODE.items():
        add("code_" + k, v)
    for k, v in UNICODE.items():
        add("uni_" + k, v)
    add("ws_spaces", "a" + " " * 17 + "b" + " " * 3 + "\n" + " " * 40)
    add("ws_tabs", "\t\tx\t \t y \t\n\t\t\n")
    add("ws_crlf", "line1\r\nline2\r\n\r\n  \r\n\rend\r")
    add("ws_blank_lines", "a\n\n\n\n\nb\n \n \n  \n")
    add("ws_trailing", "x = 1;   \n    \n")
    add("ws_only_long", " \t" * 300 + "\n" * 50)
    add("digits", "0 1 12 123 1234 12345 1234567890123 3.14159 -2.5e-10 0xdeadBEEF 1_000_000 v1.2.3")
    add("digits_unicode", "١٢٣٤٥٦٧ ０１２３ ²³ ½ Ⅻ ⑩ 𝟙𝟚𝟛 ๑๒๓")
    add("digits_long", "".join(str(rnd.randrange(10)) for _ in range(5000)))
    add("punct_runs", "!!!??? ... --- ==> <=> ::: ;;; @@@ ### $$$ %%% ^^^ &&& *** ((( ))) [[[ ]]] {{{ }}} |||")
    add("apostrophes", "don't won't I'm you're we've they'll she'd it's DON'T 'quoted' \"dq\"")
    for i, s in enumerate(SPECIALS):
        add("special_%02d" % i, "before" + s + "after " + s + s + " " + s + "\n")
    add("special_all", "".join(SPECIALS))
    add("special_partial", "<｜User <｜User｜ ｜User｜> <think <think/> </think </dsml <｜DSML｜invoke name=\"x\">")
    add("special_in_code", 'if (s == "<think>") { puts("</think>"); } // <｜end▁of▁sentence｜>\n')
    add("dsml_call", '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="read_file">\n<｜DSML｜parameter name="path" string="true">src/a.c</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>')
    add("long_letters", "a" * 100000)
    add("long_word_mix", ("Supercalifragilistic" * 500))
    add("long_cjk", "漢" * 20000)
    add("long_punct", "=" * 30000)
    add("long_minified", ";".join("var a%d=function(b){return b*%d}" % (i, i) for i in range(1500)))
    add("long_spaces_then_word", " " * 20000 + "word")
    add("long_emoji", "🚀" * 5000)
    # Random code points from planes whose assignments are old and stable.
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x4E00, 0x9FA5),
              (0x3040, 0x30FF), (0xAC00, 0xD7A3), (0x2000, 0x206F), (0x2190, 0x22FF), (0x1F600, 0x1F64F)]
    for i in range(12):
        chars = []
        for _ in range(rnd.randrange(50, 400)):
            a, b = rnd.choice(ranges)
            chars.append(chr(rnd.randrange(a, b + 1)))
            if rnd.random() < 0.15:
                chars.append(rnd.choice([" ", "\n", "\t", "  ", "\r\n", "1", "23", "'"]))
        add("random_%02d" % i, "".join(chars))
    # Random ASCII soup: exercises every regex alternative at every boundary.
    alphabet = "abcXYZ019 \t\n\r'\".,;:!?()[]{}<>/\\|-_=+*&^%$#@~`"
    for i in range(8):
        add("ascii_soup_%02d" % i, "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(100, 2000))))
    if root:
        for rel in ["common/json.c", "common/err.c", "meson.build", "tools/tokenizer/make_corpus.py"]:
            p = os.path.join(root, rel)
            if os.path.exists(p):
                with open(p, encoding="utf-8") as f:
                    add("repo_" + rel.replace("/", "_").replace(".", "_"), f.read())
    with open(out, "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print("%d cases, %d bytes of text" % (len(cases), sum(len(c["text"].encode()) for c in cases)))


if __name__ == "__main__":
    main()
