/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * What pkictl/pkictl.c shares with pkictl/matter.c: output files written
 * whole or not at all, opened before the certificate that goes into them
 * is signed.
 */

#ifndef PKICTL_H
#define PKICTL_H

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

#include <openssl/x509.h>


/*
 * An output file written whole or not at all: a fresh file beside it from
 * mkstemp() (never a file or a symlink that is in the way), fsync(),
 * rename() over path, fsync() of the directory.  Opened before the work
 * whose result it takes (before any key is opened or made, anything signed
 * or recorded), so that a path it cannot be written to costs no
 * certificate; committed or aborted after.
 */
typedef struct {
    int          fd;
    int          placed;       /* renamed into place by the commit */
    const char  *path;
    char         tmp[PATH_MAX];
    char         dir[PATH_MAX];
} pkictl_out_t;


/* Opens out for path (mode narrowed by the umask): 1, or 0 said on
 * stderr.  Refused: a path that is neither a regular file nor a symlink
 * (a directory, a device such as /dev/null, a FIFO, a socket), a symlink
 * to an existing file that is not a regular one, a path that is one of
 * the files in inputs (NULL-terminated, NULL for none; same device and
 * inode, pkcs11: URIs skipped), and a regular file that holds a PEM
 * private key. */
int pkictl_out_open(pkictl_out_t *out, const char *path, mode_t mode,
    const char *const *inputs);

/* Writes data, renames it into place, syncs the directory: 1, or 0 said
 * on stderr: the temporary file removed (nothing written), or, with
 * out->placed set, the file in place but its directory not synced (it
 * may be lost in a crash). */
int pkictl_out_commit(pkictl_out_t *out, const void *data, size_t len);

/* Removes the temporary file of an output not committed (a no-op after a
 * commit, or when none was opened: set out->fd to -1 first). */
void pkictl_out_abort(pkictl_out_t *out);

/* The PEM of the certificate x into out: 1, or 0 with what is needed to
 * find x said on stderr (its serial, its issuer, that it is recorded
 * nowhere, the advice, then x in PEM). */
int pkictl_out_cert(pkictl_out_t *out, X509 *x, const char *advice);

/* Writes path whole or not at all (inputs as for pkictl_out_open). */
int pkictl_write_file(const char *path, const void *data, size_t len,
    mode_t mode, const char *const *inputs);


#endif /* PKICTL_H */
