/* word_count: an artifact written in C. It claims tasks that need the capability
 * `count-words`, counts the words of each task's description, and completes the
 * task with the count. Built freestanding (no libc) for wasm32 with Debian's clang
 * and lld, offline:
 *
 *   clang --target=wasm32 -O2 -nostdlib -Wl,--no-entry \
 *     -o examples/artifacts/c/word_count.wasm examples/artifacts/c/word_count.c
 *   colony artifacts deploy examples/artifacts/c/word_count.wasm --name word-count \
 *     -j "counts words for the board"
 *
 * The host API (docs/artifacts.md) is imported from the module `colony`; what a
 * call answers is copied out with `result`.
 */

#define IMPORT(name) __attribute__((import_module("colony"), import_name(name)))
#define EXPORT(name) __attribute__((export_name(name)))

IMPORT("log") int colony_log(const char *text, int len);
IMPORT("result") int colony_result(char *out, int cap);
IMPORT("task_claim") int colony_task_claim(const char *json, int len);
IMPORT("task_complete") int colony_task_complete(const char *json, int len);

enum { MORE = 1, IDLE = 2 };

static char claimed[16384];
static char answer[16384 + 64];

/* The compiler may call these for copies; there is no libc to supply them. */
void *memcpy(void *dst, const void *src, unsigned long n) {
    char *d = dst;
    const char *s = src;
    while (n--) *d++ = *s++;
    return dst;
}

void *memset(void *dst, int c, unsigned long n) {
    char *d = dst;
    while (n--) *d++ = (char)c;
    return dst;
}

static int find(const char *hay, int len, const char *needle) {
    for (int at = 0; at < len; at++) {
        int i = 0;
        while (needle[i] && at + i < len && hay[at + i] == needle[i]) i++;
        if (!needle[i]) return at + i;
    }
    return -1;
}

static int put(char *out, int at, const char *text) {
    while (*text) out[at++] = *text++;
    return at;
}

static int put_number(char *out, int at, unsigned n) {
    char digits[10];
    int k = 0;
    do {
        digits[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (k) out[at++] = digits[--k];
    return at;
}

/* Words in a JSON string's body: runs of characters other than spaces and
 * escaped whitespace (\n, \t, \r). */
static unsigned count_words(const char *text, int len) {
    unsigned words = 0;
    int in_word = 0;
    for (int i = 0; i < len && text[i] != '"'; i++) {
        int space = text[i] == ' ';
        if (text[i] == '\\' && i + 1 < len) {
            char e = text[++i];
            space = e == 'n' || e == 't' || e == 'r';
        }
        if (space) {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            words++;
        }
    }
    return words;
}

EXPORT("run") int run(void) {
    static const char want[] = "{\"capabilities\":[\"count-words\"]}";
    int len = colony_task_claim(want, sizeof want - 1);
    if (len < 0) return IDLE;
    if (len > (int)sizeof claimed) return MORE;
    colony_result(claimed, sizeof claimed);
    int at = find(claimed, len, "\"description\":\"");
    unsigned words = at < 0 ? 0 : count_words(claimed + at, len - at);
    /* task_complete takes what task_claim answered, with a result added. */
    int out = put(answer, 0, "{\"result\":\"");
    out = put_number(answer, out, words);
    out = put(answer, out, " words\",");
    for (int i = 1; i < len; i++) answer[out++] = claimed[i];
    colony_task_complete(answer, out);
    colony_log(answer, out);
    return MORE;
}
