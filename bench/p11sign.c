/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Raw PKCS#11 ECDSA signing rate (bench/matter.sh's reference): THREADS
 * threads, one session each, C_SignInit + C_Sign (CKM_ECDSA over a 32-byte
 * digest) with the private key LABEL for SECONDS; prints signatures/s.
 *
 *   p11sign MODULE TOKEN LABEL PIN_FILE THREADS SECONDS
 */

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/pkcs11.h>


static CK_FUNCTION_LIST_PTR  fl;
static CK_SLOT_ID            slot;
static const char           *label;
static double                seconds;


static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static void *
run(void *arg)
{
    long               *count = arg;
    double              end;
    CK_ULONG            n, siglen;
    CK_SESSION_HANDLE   s;
    CK_OBJECT_HANDLE    key;
    CK_OBJECT_CLASS     cls = CKO_PRIVATE_KEY;
    CK_MECHANISM        mech = { CKM_ECDSA, NULL, 0 };
    unsigned char       digest[32], sig[128];
    CK_ATTRIBUTE        tmpl[] = {
        { CKA_CLASS, &cls, sizeof(cls) },
        { CKA_LABEL, (void *) label, strlen(label) },
    };

    memset(digest, 0x5a, sizeof(digest));

    if (fl->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK
        || fl->C_FindObjectsInit(s, tmpl, 2) != CKR_OK
        || fl->C_FindObjects(s, &key, 1, &n) != CKR_OK || n != 1)
    {
        fprintf(stderr, "p11sign: no private key \"%s\"\n", label);
        exit(1);
    }
    fl->C_FindObjectsFinal(s);

    end = now() + seconds;

    while (now() < end) {
        siglen = sizeof(sig);
        if (fl->C_SignInit(s, &mech, key) != CKR_OK
            || fl->C_Sign(s, digest, sizeof(digest), sig, &siglen) != CKR_OK)
        {
            fprintf(stderr, "p11sign: C_Sign failed\n");
            exit(1);
        }
        (*count)++;
    }

    fl->C_CloseSession(s);

    return NULL;
}


int
main(int argc, char **argv)
{
    int                  i, nt;
    long                 counts[64], total;
    FILE                *f;
    char                 pin[256];
    void                *h;
    double               t0, t1;
    pthread_t            tid[64];
    CK_ULONG             ns, k;
    CK_SLOT_ID           slots[64];
    CK_TOKEN_INFO        ti;
    CK_SESSION_HANDLE    ls;
    CK_C_GetFunctionList gfl;
    CK_C_INITIALIZE_ARGS ia;

    if (argc != 7) {
        fprintf(stderr, "usage: p11sign MODULE TOKEN LABEL PIN_FILE THREADS "
                "SECONDS\n");
        return 2;
    }

    label = argv[3];
    nt = atoi(argv[5]);
    seconds = atof(argv[6]);
    if (nt < 1 || nt > 64 || seconds <= 0) {
        return 2;
    }

    f = fopen(argv[4], "r");
    if (f == NULL || fgets(pin, sizeof(pin), f) == NULL) {
        return 1;
    }
    fclose(f);
    pin[strcspn(pin, "\r\n")] = '\0';

    h = dlopen(argv[1], RTLD_NOW);
    gfl = h ? (CK_C_GetFunctionList) dlsym(h, "C_GetFunctionList") : NULL;
    memset(&ia, 0, sizeof(ia));
    ia.flags = CKF_OS_LOCKING_OK;

    if (gfl == NULL || gfl(&fl) != CKR_OK || fl->C_Initialize(&ia) != CKR_OK)
    {
        fprintf(stderr, "p11sign: cannot load %s\n", argv[1]);
        return 1;
    }

    ns = 64;
    if (fl->C_GetSlotList(CK_TRUE, slots, &ns) != CKR_OK) {
        return 1;
    }
    for (k = 0; k < ns; k++) {
        size_t  n = 32, l = strlen(argv[2]);

        if (fl->C_GetTokenInfo(slots[k], &ti) != CKR_OK) {
            continue;
        }
        while (n > 0 && ti.label[n - 1] == ' ') {
            n--;
        }
        if (n == l && memcmp(ti.label, argv[2], l) == 0) {
            break;
        }
    }
    if (k == ns) {
        fprintf(stderr, "p11sign: no token %s\n", argv[2]);
        return 1;
    }
    slot = slots[k];

    if (fl->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &ls)
        != CKR_OK
        || fl->C_Login(ls, CKU_USER, (CK_UTF8CHAR_PTR) pin, strlen(pin))
           != CKR_OK)
    {
        fprintf(stderr, "p11sign: login failed\n");
        return 1;
    }

    memset(counts, 0, sizeof(counts));
    t0 = now();
    for (i = 0; i < nt; i++) {
        pthread_create(&tid[i], NULL, run, &counts[i]);
    }
    total = 0;
    for (i = 0; i < nt; i++) {
        pthread_join(tid[i], NULL);
        total += counts[i];
    }
    t1 = now();

    printf("%.0f\n", total / (t1 - t0));

    fl->C_Logout(ls);
    fl->C_CloseSession(ls);
    fl->C_Finalize(NULL);

    return 0;
}
