/*
 * ringman_table: checks and answers of FORMAT.md's table file.
 *
 * XXH64 comes from xxhash.h compiled in (XXH_INLINE_ALL): the module then
 * needs no libxxhash at run time, and the hash inlines into the lookup.
 */

#include <stdio.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "ringman_table.h"

static const unsigned char  magic[8] = "ringtbl";   /* with its NUL */

static uint32_t
le32(const unsigned char *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16
           | (uint32_t) p[3] << 24;
}

static uint64_t
le64(const unsigned char *p)
{
    return (uint64_t) le32(p) | (uint64_t) le32(p + 4) << 32;
}

static int
fail(char *err, size_t errlen, const char *fmt, unsigned long long a,
    unsigned long long b)
{
    if (err != NULL && errlen > 0) {
        snprintf(err, errlen, fmt, a, b);
    }

    return -1;
}

/*
 * section checks that [off, off + len) is inside the file and 8-aligned,
 * as FORMAT.md asks (and tablefile.Decode checks): overlapping the header
 * or another section is harmless to a reader that only reads.
 */
static int
section(uint64_t size, uint64_t off, uint64_t len)
{
    return off % 8 == 0 && off <= size && len <= size - off;
}

int
ringman_table_open(ringman_table_t *t, const void *data, size_t size,
    char *err, size_t errlen)
{
    const unsigned char  *b = data;
    uint64_t              fsize, sum, rows_len, used, i;
    uint32_t              inst_off, rows_off, slots_off, strings_off, n;
    uint32_t              off, len, hlen, blen;
    const unsigned char  *s;

    memset(t, 0, sizeof(*t));

    if (size < RINGMAN_TABLE_HEADER_SIZE) {
        return fail(err, errlen, "file of %llu bytes, shorter than the header",
                    size, 0);
    }

    if (memcmp(b, magic, 8) != 0) {
        return fail(err, errlen, "not a ringman table (bad magic)", 0, 0);
    }

    if (le32(b + 8) != 1) {
        return fail(err, errlen, "format %llu, this reader knows format 1",
                    le32(b + 8), 0);
    }

    if (le32(b + 12) != RINGMAN_TABLE_HEADER_SIZE) {
        return fail(err, errlen, "header_size %llu, want 96", le32(b + 12), 0);
    }

    fsize = le64(b + 16);
    if (fsize != size) {
        return fail(err, errlen, "file_size says %llu bytes, the file has %llu",
                    fsize, size);
    }

    sum = XXH64(b + 40, size - 40, 0);
    if (sum != le64(b + 32)) {
        return fail(err, errlen, "checksum %016llx, the bytes hash to %016llx",
                    le64(b + 32), sum);
    }

    t->base = b;
    t->size = size;
    t->epoch = le64(b + 24);
    t->partitions = le32(b + 40);
    t->width = le32(b + 44);
    t->instances = le32(b + 48);
    t->slots = le32(b + 52);
    t->overrides = le32(b + 56);
    t->wild_depths = le64(b + 64);
    inst_off = le32(b + 72);
    rows_off = le32(b + 76);
    slots_off = le32(b + 80);
    strings_off = le32(b + 84);
    t->strings_len = le32(b + 88);

    if (t->partitions == 0) {
        if (t->width != 0 || t->instances != 0) {
            return fail(err, errlen, "no partitions but width %llu and "
                        "%llu instances", t->width, t->instances);
        }

    } else if (t->width < 1 || t->width > RINGMAN_TABLE_MAX_WIDTH) {
        return fail(err, errlen, "width %llu, want 1..8", t->width, 0);

    } else if (t->instances < 1 || t->instances > 65535) {
        return fail(err, errlen, "%llu instances, want 1..65535",
                    t->instances, 0);
    }

    if (t->slots & (t->slots - 1)) {
        return fail(err, errlen, "%llu override slots, not a power of two",
                    t->slots, 0);
    }

    if ((uint64_t) t->slots < 2 * (uint64_t) t->overrides) {
        return fail(err, errlen, "%llu override slots for %llu overrides, "
                    "want at least twice as many", t->slots, t->overrides);
    }

    rows_len = (uint64_t) t->partitions * t->width * 2;

    if (!section(size, inst_off, (uint64_t) t->instances * 8)
        || !section(size, rows_off, rows_len)
        || !section(size, slots_off, (uint64_t) t->slots * 16)
        || !section(size, strings_off, t->strings_len))
    {
        return fail(err, errlen, "a section lies outside the file of %llu "
                    "bytes or is not 8-aligned", size, 0);
    }

    t->inst = b + inst_off;
    t->rows = b + rows_off;
    t->slot = b + slots_off;
    t->strings = b + strings_off;

    for (i = 0; i < t->instances; i++) {
        off = le32(t->inst + i * 8);
        len = le32(t->inst + i * 8 + 4);

        if (len < 1 || len > 1024 || off > t->strings_len
            || len > t->strings_len - off)
        {
            return fail(err, errlen, "instance %llu: bad string reference "
                        "(length %llu)", i, len);
        }
    }

    for (i = 0; i < rows_len / 2; i++) {
        n = (uint32_t) t->rows[i * 2] | (uint32_t) t->rows[i * 2 + 1] << 8;

        if (n >= t->instances) {
            return fail(err, errlen, "row %llu names instance %llu, past "
                        "the instances", i / t->width, n);
        }
    }

    used = 0;

    for (i = 0; i < t->slots; i++) {
        s = t->slot + i * 16;
        hlen = (uint32_t) s[12] | (uint32_t) s[13] << 8;

        if (hlen == 0) {
            continue;
        }

        off = le32(s + 8);
        blen = (uint32_t) s[14] | (uint32_t) s[15] << 8;

        if (blen < 1 || off > t->strings_len
            || (uint64_t) hlen + blen > t->strings_len - off)
        {
            return fail(err, errlen, "override slot %llu: bad string "
                        "reference", i, 0);
        }

        if (le64(s) != XXH64(t->strings + off, hlen, 0)) {
            return fail(err, errlen, "override slot %llu: hash does not "
                        "match its host", i, 0);
        }

        used++;
    }

    if (used != t->overrides) {
        return fail(err, errlen, "%llu used override slots, the header "
                    "says %llu", used, t->overrides);
    }

    return 0;
}


const unsigned char *
ringman_table_instance(const ringman_table_t *t, uint32_t i, size_t *len)
{
    *len = le32(t->inst + (size_t) i * 8 + 4);

    return t->strings + le32(t->inst + (size_t) i * 8);
}


const unsigned char *
ringman_table_override(const ringman_table_t *t, uint32_t i, size_t *host_len,
    const unsigned char **backend, size_t *backend_len)
{
    const unsigned char  *s = t->slot + (size_t) i * 16;
    const unsigned char  *host;

    *host_len = (size_t) s[12] | (size_t) s[13] << 8;

    if (*host_len == 0) {
        return NULL;
    }

    host = t->strings + le32(s + 8);
    *backend = host + *host_len;
    *backend_len = (size_t) s[14] | (size_t) s[15] << 8;

    return host;
}


/* find returns the used slot holding host, or -1. */
static int64_t
find(const ringman_table_t *t, const unsigned char *host, size_t len)
{
    uint64_t              h;
    uint32_t              mask, i, hlen;
    const unsigned char  *s;

    h = XXH64(host, len, 0);
    mask = t->slots - 1;

    /* Open's checks leave at least half of the slots empty: this ends. */
    for (i = (uint32_t) h & mask; ; i = (i + 1) & mask) {
        s = t->slot + (size_t) i * 16;
        hlen = (uint32_t) s[12] | (uint32_t) s[13] << 8;

        if (hlen == 0) {
            return -1;
        }

        if (hlen == len && le64(s) == h
            && memcmp(t->strings + le32(s + 8), host, len) == 0)
        {
            return i;
        }
    }
}


static int
override(const ringman_table_t *t, const unsigned char *key, size_t klen,
    ringman_answer_t *a)
{
    /* buf[0] is room for the '*' of the longest wildcard. */
    unsigned char  buf[1 + RINGMAN_TABLE_MAX_HOST];
    unsigned char  c, *host;
    size_t         len, i, dots, seen, labels;
    int64_t        slot;

    if (klen == 0 || key[0] == '/') {
        return 0;
    }

    for (len = 0; len < klen && key[len] != '/' && key[len] != ':'; len++) {
        /* void */
    }

    if (len > 0 && key[len - 1] == '.') {
        len--;
    }

    if (len == 0 || len > RINGMAN_TABLE_MAX_HOST) {
        return 0;
    }

    host = buf + 1;
    dots = 0;

    for (i = 0; i < len; i++) {
        c = key[i];
        if (c >= 'A' && c <= 'Z') {
            c |= 0x20;
        }

        host[i] = c;
        dots += (c == '.');
    }

    slot = find(t, host, len);

    if (slot < 0 && t->wild_depths != 0) {
        seen = 0;

        for (i = 0; i < len; i++) {
            if (host[i] != '.') {
                continue;
            }

            seen++;

            if (i == 0) {
                continue;
            }

            labels = dots - seen + 1;
            if (labels > 63) {
                labels = 63;
            }

            if (!(t->wild_depths & (uint64_t) 1 << labels)) {
                continue;
            }

            /* "*" + host[i..]: host[i - 1] is never read again. */
            host[i - 1] = '*';
            slot = find(t, host + i - 1, len - i + 1);

            if (slot >= 0) {
                break;
            }
        }
    }

    if (slot < 0) {
        return 0;
    }

    a->kind = RINGMAN_OVERRIDE;
    a->slot = (uint32_t) slot;
    (void) ringman_table_override(t, a->slot, &len, &a->backend,
                                  &a->backend_len);
    return 1;
}


void
ringman_table_lookup(const ringman_table_t *t, const unsigned char *key,
    size_t len, ringman_answer_t *a)
{
    memset(a, 0, sizeof(*a));

    if (t->slots > 0 && override(t, key, len, a)) {
        return;
    }

    if (t->partitions == 0) {
        a->kind = RINGMAN_NONE;
        return;
    }

    a->kind = RINGMAN_ROW;
    a->row = (uint32_t) (XXH64(key, len, 0) % t->partitions);
}


uint64_t
ringman_table_hash(const void *data, size_t len, uint64_t seed)
{
    return XXH64(data, len, seed);
}
