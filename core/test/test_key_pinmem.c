/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The PIN a vault keeps in memory (to log in again) is out of core dumps
 * and has no other copy: after pki_vault_new the process's writable
 * memory holds it exactly once, in a mapping the kernel marks "dd"
 * (MADV_DONTDUMP, /proc/self/smaps VmFlags), with the line end the PIN
 * file was read with wiped; after pki_vault_free, and after a PIN file
 * that is refused (too long), it holds it nowhere.  The PIN is random and
 * the test keeps it only masked, so that its own copy is not found.
 * pki_pin_read (the same reader, for pkictl matter hierarchy, which logs
 * in itself) keeps the same one copy and applies the same rules: with and
 * without a line end, empty, too long, a NUL byte, not a regular file.
 * No token needed: pki_vault_new reads the PIN, a login is later.
 * Skipped under Valgrind (the scan would read Valgrind's own memory).
 */

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "pki.h"
#include "test/unit.h"


#define PIN_LEN    24
#define PIN_MASK   0xa5
#define SCAN_MAX   (256UL * 1024 * 1024)
#define HITS_MAX   8


typedef struct {
    uintptr_t  addr[HITS_MAX];
    uintptr_t  start[HITS_MAX];
    int        n;
} hits_t;


static unsigned char  masked[PIN_LEN];
static char           dir[256];


/* The bytes at p are the PIN (compared masked, byte by byte: no
 * intercepted memcmp, no ASan check of what the scan reads). */
__attribute__((no_sanitize_address)) static int
pin_at(const volatile unsigned char *p)
{
    int  i;

    for (i = 0; i < PIN_LEN; i++) {
        if ((unsigned char) (p[i] ^ PIN_MASK) != masked[i]) {
            return 0;
        }
    }

    return 1;
}


__attribute__((no_sanitize_address)) static void
scan_range(uintptr_t a, uintptr_t b, hits_t *h)
{
    uintptr_t  p;

    for (p = a; p + PIN_LEN <= b; p++) {
        if (((const volatile unsigned char *) p)[0]
            == (unsigned char) (masked[0] ^ PIN_MASK)
            && pin_at((const volatile unsigned char *) p))
        {
            if (h->n < HITS_MAX) {
                h->addr[h->n] = p;
                h->start[h->n] = a;
            }
            h->n++;
        }
    }
}


/* Every private writable mapping of the process (but huge ones: ASan's
 * shadow) searched for the PIN. */
static void
scan(hits_t *h)
{
    char           line[512], perm[8];
    FILE          *f;
    unsigned long  a, b;

    memset(h, 0, sizeof(*h));

    f = fopen("/proc/self/maps", "r");
    if (f == NULL) {
        h->n = -1;
        return;
    }

    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "%lx-%lx %7s", &a, &b, perm) != 3
            || perm[0] != 'r' || perm[1] != 'w' || b - a > SCAN_MAX
            || strstr(line, "[vvar]") != NULL)
        {
            continue;
        }
        scan_range(a, b, h);
    }

    fclose(f);
}


/* The VmFlags of the mapping that starts at start ("" if none). */
static void
vmflags(uintptr_t start, char *out, size_t size)
{
    int            in;
    char           line[512];
    FILE          *f;
    unsigned long  a, b;

    out[0] = '\0';
    in = 0;

    f = fopen("/proc/self/smaps", "r");
    if (f == NULL) {
        return;
    }

    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "%lx-%lx ", &a, &b) == 2 && strchr(line, '-')
            && line[0] != 'V')
        {
            in = (uintptr_t) a == start;
            continue;
        }
        if (in && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(out, size, "%.200s", line + 8);
            out[strcspn(out, "\n")] = '\0';
            break;
        }
    }

    fclose(f);
}


static int
flag(const char *flags, const char *f)
{
    char  pad[8];

    snprintf(pad, sizeof(pad), " %s", f);

    return strstr(flags, pad) != NULL;
}


/* Writes the PIN (unmasked only in a buffer wiped right after) and what
 * follows it into path. */
static int
write_pin(const char *path, int copies, const char *tail)
{
    int            fd, i, j, ok_;
    size_t         len;
    unsigned char  buf[PIN_LEN * 16 + 8];

    len = 0;
    for (j = 0; j < copies; j++) {
        for (i = 0; i < PIN_LEN; i++) {
            buf[len++] = masked[i] ^ PIN_MASK;
        }
    }
    memcpy(buf + len, tail, strlen(tail));
    len += strlen(tail);

    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ok_ = fd != -1 && write(fd, buf, len) == (ssize_t) len;
    if (fd != -1) {
        close(fd);
    }

    OPENSSL_cleanse(buf, sizeof(buf));

    return ok_;
}


static int
under_valgrind(void)
{
    char   line[512];
    int    vg = 0;
    FILE  *f;

    f = fopen("/proc/self/maps", "r");
    if (f == NULL) {
        return 0;
    }
    while (!vg && fgets(line, sizeof(line), f) != NULL) {
        vg = strstr(line, "vgpreload") != NULL;
    }
    fclose(f);

    return vg;
}


typedef struct {
    const char  *desc;
    const char  *data;
    size_t       len;
    const char  *pin;       /* NULL: refused */
    const char  *detail;    /* refused: a part of the detail, which never
                               holds "~^", the refused PINs' bytes */
} pin_case_t;


static const pin_case_t  pin_cases[] = {
    { "no line end", "1234", 4, "1234", NULL },
    { "LF", "1234\n", 5, "1234", NULL },
    { "CRLF", "1234\r\n", 6, "1234", NULL },
    { "spaces are the PIN's", " 12 34 \n", 8, " 12 34 ", NULL },
    { "empty", "", 0, NULL, "is empty" },
    { "only a line end", "\r\n", 2, NULL, "is empty" },
    { "a NUL byte", "~^\0~^\n", 6, NULL, "contains a NUL byte" },
};


static int
write_raw(const char *path, const char *data, size_t len)
{
    int  fd, ok_;

    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ok_ = fd != -1 && write(fd, data, len) == (ssize_t) len;
    if (fd != -1) {
        close(fd);
    }

    return ok_;
}


/* pki_pin_read: the rules of a vault's PIN file, and one copy of the PIN,
 * in a "dd" mapping, gone after pki_pin_free. */
static void
pin_read(const char *path)
{
    int            i;
    char          *pin, flags[256], big[300];
    size_t         len;
    hits_t         h;
    pki_result_t   res;
    const volatile unsigned char  *p;

    for (i = 0; i < (int) (sizeof(pin_cases) / sizeof(pin_cases[0])); i++) {
        const pin_case_t  *c = &pin_cases[i];

        if (!ok(write_raw(path, c->data, c->len), "%s: PIN file written",
                c->desc))
        {
            continue;
        }

        pki_result_init(&res);
        len = 0;
        pin = pki_pin_read("tool", path, &len, &res);

        if (c->pin != NULL) {
            ok(pin != NULL && len == strlen(c->pin)
               && strcmp(pin, c->pin) == 0,
               "pki_pin_read, %s: the PIN (%s)", c->desc, res.detail);
        } else {
            ok(pin == NULL && strstr(res.detail, c->detail) != NULL
               && strstr(res.detail, "vault \"tool\"") != NULL
               && strstr(res.detail, "~^") == NULL,
               "pki_pin_read, %s: refused (%s)", c->desc, res.detail);
        }

        pki_pin_free(pin);
    }

    /* 256 bytes and a line end: the longest PIN; 257: too long */
    memset(big, '~', sizeof(big));
    big[256] = '\n';
    pki_result_init(&res);
    pin = write_raw(path, big, 257)
          ? pki_pin_read("tool", path, &len, &res) : NULL;
    ok(pin != NULL && len == 256 && pin[256] == '\0',
       "pki_pin_read: 256 bytes and LF: the PIN (%s)", res.detail);
    pki_pin_free(pin);

    pki_result_init(&res);
    pin = write_raw(path, big, 257 + 10)
          ? pki_pin_read("tool", path, &len, &res) : NULL;
    ok(pin == NULL
       && strstr(res.detail, "is too long (at most 256 bytes)") != NULL
       && strstr(res.detail, "~~") == NULL,
       "pki_pin_read: 257 bytes: refused (%s)", res.detail);
    pki_pin_free(pin);

    pki_result_init(&res);
    ok(pki_pin_read("tool", dir, &len, &res) == NULL
       && strstr(res.detail, "is not a regular file") != NULL,
       "pki_pin_read: a directory: refused (%s)", res.detail);

    unlink(path);
    pki_result_init(&res);
    ok(pki_pin_read("tool", path, &len, &res) == NULL
       && strstr(res.detail, "cannot open PIN file") != NULL,
       "pki_pin_read: no file: refused (%s)", res.detail);

    pki_result_init(&res);
    ok(pki_pin_read("tool", NULL, &len, &res) == NULL
       && res.status != PKI_OK, "pki_pin_read: no path: refused");
    pki_pin_free(NULL);

    /* the random PIN: one copy, out of core dumps, line end wiped */
    ok(write_pin(path, 1, "\n"), "PIN file written for pki_pin_read");
    pki_result_init(&res);
    pin = pki_pin_read("tool", path, &len, &res);
    ok(pin != NULL && len == PIN_LEN, "pki_pin_read: the PIN read (%s)",
       res.detail);

    scan(&h);
    ok(h.n == 1, "pki_pin_read: the PIN is in memory once (%d copies)",
       h.n);
    if (h.n >= 1) {
        vmflags(h.start[0], flags, sizeof(flags));
        ok(flag(flags, "dd"), "pki_pin_read: its mapping is left out of "
           "core dumps (VmFlags:%s)", flags[0] ? flags : " none found");
        p = (const volatile unsigned char *) h.addr[0];
        ok(p[PIN_LEN] == '\0' && p[PIN_LEN + 1] == '\0',
           "pki_pin_read: the line end read with it is wiped");
    }

    pki_pin_free(pin);

    scan(&h);
    ok(h.n == 0, "pki_pin_free: the PIN is nowhere in memory (%d)", h.n);

    unlink(path);
}


/* With the test token (t/00-core.t): after the login the vault's copy is
 * still the one in the "dd" mapping, and the only one: the vault logs in
 * through the module's C_Login, not libp11's PKCS11_login, which kept a
 * heap copy of its own (for its relogin after fork) until the module was
 * finalised. */
static void
token_login(void)
{
    int             fd, i;
    char            flags[256];
    hits_t          h;
    ssize_t         n;
    pki_vault_t    *v;
    pki_result_t    res;
    const char     *mod, *tok, *pinf;
    unsigned char   buf[PIN_LEN + 8];

    mod = getenv("PKI_TEST_P11_MODULE");
    tok = getenv("PKI_TEST_TOKEN");
    pinf = getenv("PKI_TEST_PIN_FILE");
    if (mod == NULL || tok == NULL || pinf == NULL) {
        diag("no test token: login part skipped");
        return;
    }

    fd = open(pinf, O_RDONLY | O_CLOEXEC);
    n = fd != -1 ? read(fd, buf, sizeof(buf)) : -1;
    if (fd != -1) {
        close(fd);
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) {
        n--;
    }
    if (n != PIN_LEN) {
        /* the scan compares PIN_LEN bytes: a test PIN of another length
         * is not looked for */
        OPENSSL_cleanse(buf, sizeof(buf));
        diag("test PIN is not %d bytes: login part skipped", PIN_LEN);
        return;
    }
    for (i = 0; i < PIN_LEN; i++) {
        masked[i] = buf[i] ^ PIN_MASK;
    }
    OPENSSL_cleanse(buf, sizeof(buf));

    pki_result_init(&res);
    v = pki_vault_new("pinmem-token", mod, tok, pinf, &res);
    if (!ok(v != NULL && pki_vault_open(v, &res) == PKI_OK,
            "token vault opened (%s)", res.detail))
    {
        pki_vault_free(v);
        return;
    }

    scan(&h);
    for (i = 0; i < h.n && i < HITS_MAX; i++) {
        vmflags(h.start[i], flags, sizeof(flags));
        if (flag(flags, "dd")) {
            break;
        }
    }
    ok(i < h.n && i < HITS_MAX, "after the login the vault's PIN is still "
       "in a \"dd\" mapping");
    ok(h.n == 1, "and nowhere else: the login left no copy in libp11 or "
       "the module (%d copies)", h.n);

    pki_vault_free(v);
}


int
main(void)
{
    int             i;
    char            path[300], flags[256];
    hits_t          h;
    const char     *t;
    pki_vault_t    *v;
    pki_result_t    res;
    unsigned char   rnd[PIN_LEN];
    const volatile unsigned char  *p;

    if (under_valgrind()) {
        skip_all("under Valgrind: the memory scan would read Valgrind's "
                 "own memory");
    }

    pki_init();

    /* a random printable PIN, kept masked */
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        skip_all("RAND_bytes failed");
    }
    for (i = 0; i < PIN_LEN; i++) {
        masked[i] = (unsigned char) ('A' + rnd[i] % 26) ^ PIN_MASK;
    }
    OPENSSL_cleanse(rnd, sizeof(rnd));

    t = getenv("PKI_TEST_TMPDIR");
    snprintf(dir, sizeof(dir), "%s/pinmem.XXXXXX", t ? t : "/tmp");
    if (mkdtemp(dir) == NULL) {
        skip_all("mkdtemp failed");
    }
    snprintf(path, sizeof(path), "%s/pin", dir);

    scan(&h);
    ok(h.n == 0, "before: the PIN is nowhere in memory (%d)", h.n);

    /* a PIN file with a CRLF line end, as an editor leaves it */
    ok(write_pin(path, 1, "\r\n"), "PIN file written");

    pki_result_init(&res);
    v = pki_vault_new("pinmem", "/nonexistent/pkcs11.so", "token", path,
                      &res);
    ok(v != NULL, "vault made: the PIN is read (%s)", res.detail);
    if (res.log[0]) {
        diag("pki_vault_new: %s", res.log);
    }

    scan(&h);
    ok(h.n == 1, "the PIN is in memory once (%d copies)", h.n);

    if (h.n >= 1) {
        vmflags(h.start[0], flags, sizeof(flags));
        ok(flag(flags, "dd"), "its mapping is left out of core dumps "
           "(VmFlags:%s)", flags[0] ? flags : " none found");
        if (!flag(flags, "lo")) {
            diag("its mapping is not locked (no mlock privilege?)");
        }

        p = (const volatile unsigned char *) h.addr[0];
        ok(p[PIN_LEN] == '\0' && p[PIN_LEN + 1] == '\0'
           && p[PIN_LEN + 2] == '\0',
           "the line end read with it is wiped");
    }

    for (i = 1; i < h.n && i < HITS_MAX; i++) {
        vmflags(h.start[i], flags, sizeof(flags));
        diag("another copy at %#lx (mapping %#lx, VmFlags:%s)",
             (unsigned long) h.addr[i], (unsigned long) h.start[i], flags);
    }

    pki_vault_free(v);

    scan(&h);
    ok(h.n == 0, "vault freed: the PIN is nowhere in memory (%d)", h.n);

    /* a PIN file that is refused (too long): its content is not left in
     * what it was read into */
    ok(write_pin(path, 12, "\n"), "a PIN file of 288 bytes written");
    pki_result_init(&res);
    v = pki_vault_new("pinmem2", "/nonexistent/pkcs11.so", "token", path,
                      &res);
    ok(v == NULL && strstr(res.detail, "too long") != NULL,
       "too long: refused (%s)", res.detail);
    pki_vault_free(v);

    scan(&h);
    ok(h.n == 0, "  and its content is nowhere in memory (%d)", h.n);

    pin_read(path);

    unlink(path);
    rmdir(dir);

    token_login();

    return done_testing();
}
