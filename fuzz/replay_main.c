/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * main() for the replay build of a fuzz target: feeds every file named on
 * the command line, and every regular file in every directory named (not
 * recursive, in name order), to LLVMFuzzerTestOneInput once.  Built with
 * gcc + ASan/UBSan, so CI replays the corpora without clang's fuzzer
 * runtime; a sanitizer report aborts the process (non-zero exit).
 *
 *   replay_TARGET [-v] PATH...
 */

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"


#define PKI_REPLAY_MAX  (1024 * 1024)


__attribute__((weak)) int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;
    return 0;
}


static int  verbose;


static int
pki_replay_file(const char *path)
{
    FILE           *f;
    size_t          n;
    unsigned char  *buf;

    f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return -1;
    }

    buf = malloc(PKI_REPLAY_MAX);
    if (buf == NULL) {
        fclose(f);
        return -1;
    }

    n = fread(buf, 1, PKI_REPLAY_MAX, f);
    fclose(f);

    if (verbose) {
        fprintf(stderr, "replay: %s (%zu bytes)\n", path, n);
    }

    /* an exact-size copy, so ASan sees reads past the input */
    {
        unsigned char  *in = malloc(n ? n : 1);

        if (in == NULL) {
            free(buf);
            return -1;
        }
        memcpy(in, buf, n);
        free(buf);
        LLVMFuzzerTestOneInput(in, n);
        free(in);
    }

    return 1;
}


static int
pki_replay_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


static int
pki_replay_dir(const char *dir)
{
    int             total, rc;
    DIR            *d;
    char          **names, path[4096];
    size_t          n, cap, i;
    struct stat     st;
    struct dirent  *e;

    d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "replay: cannot open directory %s\n", dir);
        return -1;
    }

    names = NULL;
    n = cap = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            names = realloc(names, cap * sizeof(char *));
            if (names == NULL) {
                closedir(d);
                return -1;
            }
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);

    if (n) {
        qsort(names, n, sizeof(char *), pki_replay_cmp);
    }

    total = 0;
    for (i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            rc = pki_replay_file(path);
            if (rc < 0) {
                total = -1;
                break;
            }
            total += rc;
        }
    }

    for (i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);

    return total;
}


int
main(int argc, char **argv)
{
    int          i, n, total;
    struct stat  st;

    LLVMFuzzerInitialize(&argc, &argv);

    total = 0;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-v") == 0) {
            verbose = 1;
            continue;
        }

        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: no such file\n", argv[i]);
            return 2;
        }

        n = S_ISDIR(st.st_mode) ? pki_replay_dir(argv[i])
                                : pki_replay_file(argv[i]);
        if (n < 0) {
            return 2;
        }
        total += n;
    }

    printf("replayed %d inputs\n", total);

    return 0;
}
