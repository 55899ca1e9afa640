/* Golden symbol tests per language (definitions and references with kinds and positions), syntax
 * errors, the lexical fallback, query predicates, language detection, and the symbols fuzz entry
 * on hostile inputs. Positions in the goldens: 1-based line, 0-based byte column. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "repo.h"

int repo_fuzz_symbols_one(struct repo_symbolizer *z, const uint8_t *data, size_t size);

struct golden {
    enum repo_lang lang;
    bool with_identifiers; /* also list the generic identifier references */
    const char *src;
    const char *expected;
};

static const struct golden g_a_c = {
    REPO_LANG_C, true,
    /* source */
        "#include <stdio.h>\n"
        "#define MAX_N 10\n"
        "typedef struct point { int x, y; } point_t;\n"
        "enum color { RED, GREEN };\n"
        "static int counter = 0;\n"
        "struct point *make_point(int x, int y);\n"
        "static int add(int a, int b) { return a + b; }\n"
        "int main(void) {\n"
        "    point_t p = {1, 2};\n"
        "    struct point *q = make_point(p.x, p.y);\n"
        "    printf(\"%d\\n\", add(q->x, counter));\n"
        "    return 0;\n"
        "}\n",
    /* expected tags */
        "D macro MAX_N 2:8\n"
        "D class point 3:15\n"
        "D type point_t 3:35\n"
        "D type color 4:5\n"
        "D constant RED 4:13\n"
        "D constant GREEN 4:18\n"
        "D variable counter 5:11\n"
        "R type point 6:7\n"
        "D function make_point 6:14\n"
        "R identifier x 6:29\n"
        "R identifier y 6:36\n"
        "D function add 7:11\n"
        "R identifier a 7:19\n"
        "R identifier b 7:26\n"
        "R identifier a 7:38\n"
        "R identifier b 7:42\n"
        "D function main 8:4\n"
        "R type point_t 9:4\n"
        "R identifier p 9:12\n"
        "R type point 10:11\n"
        "R identifier q 10:18\n"
        "R call make_point 10:22\n"
        "R identifier p 10:33\n"
        "R field x 10:35\n"
        "R identifier p 10:38\n"
        "R field y 10:40\n"
        "R call printf 11:4\n"
        "R call add 11:19\n"
        "R identifier q 11:23\n"
        "R field x 11:26\n"
        "R identifier counter 11:29\n"};

static const struct golden g_b_py = {
    REPO_LANG_PYTHON, false,
    /* source */
        "import os\n"
        "from util import helper\n"
        "\n"
        "class Greeter:\n"
        "    def __init__(self, name):\n"
        "        self.name = name\n"
        "    def greet(self):\n"
        "        return helper(self.name)\n"
        "\n"
        "def main():\n"
        "    g = Greeter(os.getcwd())\n"
        "    print(g.greet())\n",
    /* expected tags */
        "R import helper 2:17\n"
        "D class Greeter 4:6\n"
        "D method __init__ 5:8\n"
        "R field name 6:13\n"
        "D method greet 7:8\n"
        "R call helper 8:15\n"
        "R field name 8:27\n"
        "D function main 10:4\n"
        "R call Greeter 11:8\n"
        "R call getcwd 11:19\n"
        "R call print 12:4\n"
        "R call greet 12:12\n"};

static const struct golden g_c_js = {
    REPO_LANG_JAVASCRIPT, false,
    /* source */
        "class Shape { area() { return 0; } }\n"
        "function makeShape(kind) { return new Shape(); }\n"
        "const render = (s) => s.area();\n"
        "render(makeShape(\"x\"));\n",
    /* expected tags */
        "D class Shape 1:6\n"
        "D method area 1:14\n"
        "D function makeShape 2:9\n"
        "R class Shape 2:38\n"
        "D function render 3:6\n"
        "R call area 3:24\n"
        "R call render 4:0\n"
        "R call makeShape 4:7\n"};

static const struct golden g_d_ts = {
    REPO_LANG_TYPESCRIPT, false,
    /* source */
        "interface Named { name: string; }\n"
        "export class Person implements Named {\n"
        "  constructor(public name: string) {}\n"
        "  hello(other: Named): string { return greet(other.name); }\n"
        "}\n"
        "function greet(n: string): string { return \"hi \" + n; }\n"
        "type Id = number;\n",
    /* expected tags */
        "D interface Named 1:10\n"
        "D class Person 2:13\n"
        "D method hello 4:2\n"
        "R type Named 4:15\n"
        "R call greet 4:39\n"
        "D function greet 6:9\n"};

static const struct golden g_e_tsx = {
    REPO_LANG_TSX, false,
    /* source */
        "function App(props: Props) { return <div>{format(props.x)}</div>; }\n"
        "export default App;\n",
    /* expected tags */
        "D function App 1:9\n"
        "R type Props 1:20\n"
        "R call format 1:42\n"};

static const struct golden g_f_go = {
    REPO_LANG_GO, false,
    /* source */
        "package main\n"
        "\n"
        "import \"fmt\"\n"
        "\n"
        "type Server struct{ port int }\n"
        "\n"
        "func (s *Server) Start() error { return listen(s.port) }\n"
        "\n"
        "func listen(p int) error { fmt.Println(p); return nil }\n",
    /* expected tags */
        "D type Server 5:5\n"
        "R type int 5:25\n"
        "R type Server 7:9\n"
        "D method Start 7:17\n"
        "R type error 7:25\n"
        "R call listen 7:40\n"
        "D function listen 9:5\n"
        "R type int 9:14\n"
        "R type error 9:19\n"
        "R call Println 9:31\n"};

static const struct golden g_g_rs = {
    REPO_LANG_RUST, false,
    /* source */
        "struct Cache { n: usize }\n"
        "trait Store { fn get(&self) -> usize; }\n"
        "impl Store for Cache { fn get(&self) -> usize { helper(self.n) } }\n"
        "fn helper(n: usize) -> usize { println!(\"{}\", n); n }\n"
        "mod inner {}\n",
    /* expected tags */
        "D class Cache 1:7\n"
        "D interface Store 2:6\n"
        "R implementation Store 3:5\n"
        "D method get 3:26\n"
        "R call helper 3:48\n"
        "D function helper 4:3\n"
        "R call println 4:31\n"
        "D module inner 5:4\n"};

static const struct golden g_h_java = {
    REPO_LANG_JAVA, false,
    /* source */
        "public class Main extends Base implements Runnable {\n"
        "  public void run() { helper(new Worker()); }\n"
        "  interface Task { void go(); }\n"
        "}\n",
    /* expected tags */
        "D class Main 1:13\n"
        "R class Base 1:26\n"
        "R implementation Runnable 1:42\n"
        "D method run 2:14\n"
        "R call helper 2:22\n"
        "R class Worker 2:33\n"
        "D interface Task 3:12\n"
        "D method go 3:24\n"};

static const struct golden g_i_sh = {
    REPO_LANG_BASH, false,
    /* source */
        "#!/bin/bash\n"
        "NAME=world\n"
        "greet() { echo \"hello $1\"; }\n"
        "cleanup() { rm -f /tmp/x; }\n"
        "greet \"$NAME\"\n"
        "cleanup\n",
    /* expected tags */
        "D function greet 3:0\n"
        "R call echo 3:10\n"
        "D function cleanup 4:0\n"
        "R call rm 4:12\n"
        "R call greet 5:0\n"
        "R call cleanup 6:0\n"};

static const struct golden g_j_cpp = {
    REPO_LANG_CPP, false,
    /* source */
        "namespace app {\n"
        "class Widget : public Base {\n"
        " public:\n"
        "  void draw() const;\n"
        "  int size() { return compute(3); }\n"
        "};\n"
        "void Widget::draw() const { std::printf(\"x\"); helper::run<int>(1); }\n"
        "}\n",
    /* expected tags */
        "D module app 1:10\n"
        "D class Widget 2:6\n"
        "R type Base 2:22\n"
        "D method draw 4:7\n"
        "D method size 5:6\n"
        "R call compute 5:22\n"
        "R module Widget 7:5\n"
        "D method draw 7:13\n"
        "R module std 7:28\n"
        "R call printf 7:33\n"
        "R module helper 7:46\n"
        "R call run 7:54\n"};

static const struct golden *const goldens[] = {&g_a_c, &g_b_py, &g_c_js, &g_d_ts, &g_e_tsx, &g_f_go, &g_g_rs, &g_h_java, &g_i_sh, &g_j_cpp};

static struct repo_symbolizer *z;

static int setup(void **state)
{
    (void)state;
    struct ctx_err e = {0};
    int rc = repo_symbolizer_new(2, &z, &e);
    if (rc) fprintf(stderr, "symbolizer: %s\n", e.msg);
    return rc;
}

static int teardown(void **state)
{
    (void)state;
    repo_symbolizer_free(z);
    return 0;
}

/* The tags of src as golden text. */
static char *render(enum repo_lang lang, const char *src, bool ids, bool *errs)
{
    struct repo_symbol *s = NULL;
    size_t n = 0;
    struct ctx_err e = {0};
    bool se = false;
    int rc = repo_symbols_extract(z, 1, lang, src, strlen(src), &s, &n, &se, &e);
    if (rc) fprintf(stderr, "extract: %s\n", e.msg);
    assert_int_equal(rc, 0);
    if (errs) *errs = se;
    size_t cap = 64 + n * 96, k = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    out[0] = 0;
    for (size_t i = 0; i < n; i++) {
        if (!ids && s[i].kind == REPO_SYM_IDENTIFIER) continue;
        k += (size_t)snprintf(out + k, cap - k, "%s %s %.*s %u:%u\n", s[i].is_def ? "D" : "R",
                              repo_sym_kind_name(s[i].kind), (int)s[i].name_len, src + s[i].name_off,
                              s[i].line + 1, s[i].col);
    }
    free(s);
    return out;
}

static void test_goldens(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof goldens / sizeof goldens[0]; i++) {
        const struct golden *g = goldens[i];
        bool errs = true;
        char *got = render(g->lang, g->src, g->with_identifiers, &errs);
        if (strcmp(got, g->expected) != 0)
            fprintf(stderr, "language %s:\n--- expected\n%s--- got\n%s", repo_lang_name(g->lang), g->expected, got);
        assert_string_equal(got, g->expected);
        assert_false(errs);
        free(got);
    }
}

static void test_syntax_errors_do_not_stop(void **state)
{
    (void)state;
    bool errs = false;
    char *got = render(REPO_LANG_C, "int broken( { return 1 +; }\nvoid ok(void) { call_me(); }\n", false, &errs);
    assert_true(errs);
    assert_string_equal(got, "R call call_me 2:16\n");
    free(got);
    got = render(REPO_LANG_PYTHON, "def f(:\n    return g(\nclass K:\n    def m(self): pass\n", false, &errs);
    assert_true(errs);
    assert_non_null(strstr(got, "D class K 3:6\n"));
    free(got);
}

static void test_predicates(void **state)
{
    (void)state;
    /* #not-match? @name "^(require)$" drops require(); #not-eq? @name "constructor" drops it. */
    char *got = render(REPO_LANG_JAVASCRIPT,
                       "const fs = require('fs');\nclass A { constructor() {} run() { load(); } }\n", false, NULL);
    assert_string_equal(got, "D class A 2:6\nD method run 2:27\nR call load 2:35\n");
    free(got);
}

static void test_fallback(void **state)
{
    (void)state;
    /* No grammar: identifiers of 3+ bytes become references, including non-ASCII ones. */
    char *got = render(REPO_LANG_NONE, "call parse_config(x) then résumé;\nok\n", true, NULL);
    assert_string_equal(got, "R identifier call 1:0\nR identifier parse_config 1:5\nR identifier then 1:21\n"
                             "R identifier résumé 1:26\n");
    free(got);
    /* Empty text: nothing, no error. */
    got = render(REPO_LANG_RUST, "", true, NULL);
    assert_string_equal(got, "");
    free(got);
}

static void test_bad_slot(void **state)
{
    (void)state;
    struct repo_symbol *s;
    size_t n;
    bool se;
    struct ctx_err e = {0};
    assert_int_equal(repo_symbols_extract(z, 2, REPO_LANG_C, "int x;", 6, &s, &n, &se, &e), CTX_EINVAL);
    assert_non_null(strstr(e.msg, "slot 2"));
}

static void test_lang_detect(void **state)
{
    (void)state;
    assert_int_equal(repo_lang_detect("src/a.c", NULL, 0), REPO_LANG_C);
    assert_int_equal(repo_lang_detect("x/y.hpp", NULL, 0), REPO_LANG_CPP);
    assert_int_equal(repo_lang_detect("k.cu", NULL, 0), REPO_LANG_CPP);
    assert_int_equal(repo_lang_detect("a.tsx", NULL, 0), REPO_LANG_TSX);
    assert_int_equal(repo_lang_detect("a.mjs", NULL, 0), REPO_LANG_JAVASCRIPT);
    assert_int_equal(repo_lang_detect("Main.java", NULL, 0), REPO_LANG_JAVA);
    assert_int_equal(repo_lang_detect("README", NULL, 0), REPO_LANG_NONE);
    assert_int_equal(repo_lang_detect(".c", NULL, 0), REPO_LANG_NONE);
    const char *sh = "#!/usr/bin/env bash\necho hi\n";
    assert_int_equal(repo_lang_detect("scripts/setup", sh, strlen(sh)), REPO_LANG_BASH);
    const char *py = "#!/usr/bin/python3\n";
    assert_int_equal(repo_lang_detect("tool", py, strlen(py)), REPO_LANG_PYTHON);
}

static void test_fuzz_corpus(void **state)
{
    (void)state;
    static const char *const corpus[] = {
        "\x01int f(", "\x01}}}}{{{{", "\x02" "class A { void f() { ::x<y<z>>(); } };", "\x03" "def \xff\xfe(:\n",
        "\x04`${`${`${", "\x05<<<>>>", "\x06<div><div>{(</div>", "\x07" "func (", "\x08" "fn x<'a>(", "\x09" "class {",
        "\x0a$(( $( ${", "\x00\x80\x80\x80", "\x01#define A(x) x##x\nA(A(A()))", "\x02template<",
        "\x03\"\"\"unterminated", "\x01/* unterminated", "\x03\t\t\tdef\n\x0c",
    };
    for (size_t i = 0; i < sizeof corpus / sizeof corpus[0]; i++) {
        size_t len = strlen(corpus[i] + 1) + 1;
        assert_int_equal(repo_fuzz_symbols_one(z, (const uint8_t *)corpus[i], len), 0);
    }
    /* Deep nesting: 20000 open parentheses in C. */
    size_t n = 20001;
    char *deep = malloc(n + 1);
    assert_non_null(deep);
    deep[0] = 1;
    memset(deep + 1, '(', n - 1);
    assert_int_equal(repo_fuzz_symbols_one(z, (const uint8_t *)deep, n), 0);
    free(deep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_goldens),          cmocka_unit_test(test_syntax_errors_do_not_stop),
        cmocka_unit_test(test_predicates),       cmocka_unit_test(test_fallback),
        cmocka_unit_test(test_bad_slot),         cmocka_unit_test(test_lang_detect),
        cmocka_unit_test(test_fuzz_corpus),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
