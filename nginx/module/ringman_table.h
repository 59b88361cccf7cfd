/*
 * ringman_table: read a `ringman-table` format 1 file (FORMAT.md) that is
 * already in memory (mmap'ed by the nginx module, a byte slice in a cgo
 * test), check it once, and answer keys from it.
 *
 * It depends on nothing but libc and xxhash.h, so that tests and fuzz
 * harnesses can call it without nginx. Nothing here allocates, locks or
 * makes a system call: ringman_table_open() only checks and records
 * pointers into the caller's bytes, which must stay valid (and unchanged)
 * while the table is used.
 */

#ifndef RINGMAN_TABLE_H
#define RINGMAN_TABLE_H

#include <stddef.h>
#include <stdint.h>

#define RINGMAN_TABLE_HEADER_SIZE  96
#define RINGMAN_TABLE_MAX_WIDTH    8
#define RINGMAN_TABLE_MAX_HOST     253

typedef struct {
    const unsigned char  *base;
    size_t                size;

    uint64_t              epoch;
    uint64_t              wild_depths;
    uint32_t              partitions;     /* P */
    uint32_t              width;          /* W */
    uint32_t              instances;      /* N */
    uint32_t              slots;          /* S */
    uint32_t              overrides;

    const unsigned char  *inst;           /* N x 8 */
    const unsigned char  *rows;           /* P x W x 2 */
    const unsigned char  *slot;           /* S x 16 */
    const unsigned char  *strings;
    uint32_t              strings_len;
} ringman_table_t;

/* What a key maps to. */
typedef enum {
    RINGMAN_NONE = 0,      /* no override and no instance: no route */
    RINGMAN_OVERRIDE,      /* backend: the override of the key's host */
    RINGMAN_ROW            /* row: W instance indexes, owner first */
} ringman_kind_t;

typedef struct {
    ringman_kind_t        kind;
    uint32_t              slot;           /* RINGMAN_OVERRIDE: the slot */
    const unsigned char  *backend;        /* RINGMAN_OVERRIDE */
    size_t                backend_len;
    uint32_t              row;            /* RINGMAN_ROW: the partition */
} ringman_answer_t;

/*
 * ringman_table_open checks data[0, size) against every check of FORMAT.md
 * and fills t. It returns 0, or -1 with a one-line reason in err (at most
 * errlen bytes, NUL-terminated; err may be NULL).
 */
int ringman_table_open(ringman_table_t *t, const void *data, size_t size,
    char *err, size_t errlen);

/* ringman_table_lookup answers key as RING.LOOKUP does (FORMAT.md). */
void ringman_table_lookup(const ringman_table_t *t, const unsigned char *key,
    size_t len, ringman_answer_t *a);

/* ringman_table_candidate returns the index of row's i-th candidate (i < W). */
static inline uint32_t
ringman_table_candidate(const ringman_table_t *t, uint32_t row, uint32_t i)
{
    const unsigned char  *p = t->rows + ((size_t) row * t->width + i) * 2;

    return (uint32_t) p[0] | (uint32_t) p[1] << 8;
}

/* ringman_table_instance returns instance i's "host:port" (i < N). */
const unsigned char *ringman_table_instance(const ringman_table_t *t,
    uint32_t i, size_t *len);

/*
 * ringman_table_override returns the host and backend of slot i, or NULL
 * when the slot is empty (i < S).
 */
const unsigned char *ringman_table_override(const ringman_table_t *t,
    uint32_t i, size_t *host_len, const unsigned char **backend,
    size_t *backend_len);

/* ringman_table_hash is XXH64 (the format's hash), for callers' own keys. */
uint64_t ringman_table_hash(const void *data, size_t len, uint64_t seed);

#endif /* RINGMAN_TABLE_H */
