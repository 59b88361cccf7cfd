/*
 * ngx_http_ringman_module: route requests with the tables a ringman node
 * writes (`ringman serve --table-dir DIR`, FORMAT.md), without a round trip
 * to ringman per request.
 *
 * Each worker reads DIR/<service>.table, checks it once (ringman_table.c),
 * precomputes every instance's and override's sockaddr, and answers each
 * request from memory: the override of the key's host, else the key's row
 * of candidates, owner first. A timer stats each file every
 * ringman_refresh; a new file (ringman renames a new one over the old, so a
 * new inode) is read, checked and swapped in; a refused one is logged
 * once and the old table stays. The file's mtime is the node's heartbeat:
 * a table whose file is older than ringman_max_stale is not used. The
 * timer decides that too, and logs each change once: a request only reads
 * the service's usable table, or NULL.
 *
 * Two ways to use an answer:
 *   set_backend $backend [KEY] [service=NAME];   (preaccess phase)
 *     sets $backend to the owner's "host:port", or ends the request with
 *     ringman_no_route_status (404) / 503 (no fresh table);
 *   upstream NAME { ringman_hash KEY [service=NAME]; keepalive N; }
 *     a balancer: tries the candidates in order (tries = W), and chains
 *     under keepalive as nginx's hash module does; with no fresh table or
 *     no candidate, 502.
 * In one request both share one answer (ngx_http_ringman_request_t).
 *
 * A table is shared by the requests that still use it: each holds a
 * reference (released by a pool cleanup), so a swap never frees what a
 * request in flight (a retry, $upstream_addr in the log) points into.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ringman_table.h"


#define NGX_HTTP_RINGMAN_DEFAULT_DIR      "/run/ringman"
#define NGX_HTTP_RINGMAN_DEFAULT_SERVICE  "web"
#define NGX_HTTP_RINGMAN_DEFAULT_KEY      "$host$uri"


typedef struct {
    struct sockaddr                *sockaddr;   /* NULL: not IP:port */
    socklen_t                       socklen;
    ngx_str_t                       name;
    ngx_atomic_t                   *inflight;   /* balance_factor; or NULL */
} ngx_http_ringman_peer_t;


/*
 * In-flight requests per instance, shared by all workers (balance_factor):
 * an open-addressing table of counters keyed by a hash of service and
 * instance, filled when tables are loaded and never emptied (a few
 * thousand instances over a node's life fit). Requests only add and
 * subtract, atomically.
 */
#define NGX_HTTP_RINGMAN_COUNTERS  65536

typedef struct {
    ngx_atomic_t                    key;
    ngx_atomic_t                    count;
} ngx_http_ringman_counter_t;


typedef struct {
    ngx_http_ringman_counter_t      slots[NGX_HTTP_RINGMAN_COUNTERS];
} ngx_http_ringman_shctx_t;


typedef struct {
    ngx_pool_t                     *pool;
    void                           *map;        /* the file's bytes */
    size_t                          map_size;
    ngx_fd_t                        fd;         /* kept open: see refresh */
    ngx_uint_t                      refs;
    ringman_table_t                 t;
    ngx_http_ringman_peer_t        *instances;  /* N */
    ngx_http_ringman_peer_t        *overrides;  /* S, by slot */

    /*
     * The balancer's candidates, P rows of W uint16 (FORMAT.md's rows):
     * the file's own rows, or when some instances are not IP:port, rows
     * without them, row r holding row_len[r]. A request only indexes them.
     */
    const u_char                   *rows;
    u_char                         *row_len;    /* NULL: W in every row */
    ngx_atomic_t                   *inflight;   /* the service's total */
} ngx_http_ringman_table_t;


typedef struct {
    ngx_str_t                       name;
    ngx_str_t                       path;       /* NUL-terminated */
    ngx_shm_zone_t                 *zone;       /* counters, or NULL */

    /* per worker */
    ngx_http_ringman_table_t       *table;      /* the last one loaded */
    ngx_http_ringman_table_t       *usable;     /* table, or NULL: stale */
    dev_t                           dev;        /* of table's file */
    ino_t                           ino;
    off_t                           size;
    ngx_msec_t                      mtime;      /* last seen, ms since 1970 */

    ngx_fd_t                        bad_fd;     /* last refused file, */
    dev_t                           bad_dev;    /* kept open: see refresh */
    ino_t                           bad_ino;
    off_t                           bad_size;

    ngx_file_info_t                 failed;     /* stat of a failed read */

    unsigned                        missing_logged:1;
    unsigned                        error_logged:1;  /* open, read, ... */
    unsigned                        stale:1;
    unsigned                        read_failed:1;   /* failed is set */
} ngx_http_ringman_service_t;


typedef struct {
    ngx_str_t                       dir;
    ngx_msec_t                      refresh;
    ngx_msec_t                      max_stale;  /* 0: off */
    ngx_array_t                     services;   /* of service pointers */
    ngx_array_t                     keys;       /* of key pointers */
    ngx_event_t                     timer;
    ngx_shm_zone_t                 *zone;       /* balance_factor's counters */
} ngx_http_ringman_main_conf_t;


/*
 * A key, compiled once per distinct text: the balancer knows set_backend
 * asked with the same key by the pointer. A key made of variables and
 * text only (the default $host$uri) is also kept as its parts, read with
 * one variable lookup each: about a third of what evaluating the complex
 * value costs (it looks each variable up twice, through the script
 * engine), and the largest part of the module's work per request.
 */
#define NGX_HTTP_RINGMAN_KEY_PARTS  8

typedef struct {
    ngx_int_t                       index;      /* NGX_ERROR: text */
    ngx_str_t                       text;
} ngx_http_ringman_key_part_t;

typedef struct {
    ngx_str_t                       source;
    ngx_http_complex_value_t        cv;
    ngx_uint_t                      nparts;     /* 0: evaluate cv */
    ngx_http_ringman_key_part_t     parts[NGX_HTTP_RINGMAN_KEY_PARTS];
} ngx_http_ringman_key_t;


typedef struct {
    ngx_http_ringman_key_t         *key;
    ngx_http_ringman_service_t     *service;
    ngx_uint_t                      factor;     /* x 100; 0: off */
} ngx_http_ringman_srv_conf_t;


typedef struct {
    /* set_backend */
    ngx_int_t                       index;      /* NGX_CONF_UNSET: none */
    ngx_http_ringman_key_t         *key;
    ngx_str_t                       service_name;
    ngx_http_ringman_service_t     *service;

    /* ringman_candidates */
    ngx_http_ringman_key_t         *cand_key;
    ngx_str_t                       cand_service_name;
    ngx_http_ringman_service_t     *cand_service;
    ngx_flag_t                      cand_unescape;

    ngx_str_t                       default_service;
    ngx_uint_t                      no_route_status;
} ngx_http_ringman_loc_conf_t;


/*
 * One request's answer, shared by set_backend and the balancer: set_backend
 * looks the key up and keeps the answer here (the request's module ctx);
 * the balancer of the same request, when it asks the same service with
 * the same compiled key, takes its candidates from it instead of
 * evaluating and looking the key up again (module.conf uses both), and
 * uses it as its peer data. The key is then evaluated once, in preaccess:
 * what changes it later in the same location (a try_files that rewrites
 * $uri, auth_request_set) does not move the request. The table is
 * referenced until the request's pool goes (cleanup), so the answer, the
 * row and $backend's bytes stay valid even if a newer table is swapped in
 * meanwhile.
 */
typedef struct {
    ngx_http_ringman_service_t     *service;
    ngx_http_ringman_key_t         *key;
    ngx_http_ringman_table_t       *table;
    ngx_pool_cleanup_t              cleanup;    /* releases table */
    ringman_answer_t                a;

    /* the balancer's peer data, set by its peer init */
    const u_char                   *row;        /* the candidates, or NULL */
    ngx_http_ringman_peer_t        *override;   /* when row is NULL */
    ngx_uint_t                      n;
    ngx_uint_t                      tried;
    ngx_uint_t                      used;       /* bit i: candidate i tried */
    ngx_uint_t                      factor;
    ngx_http_ringman_peer_t        *current;    /* counted in flight */
} ngx_http_ringman_request_t;


static ngx_int_t ngx_http_ringman_postconf(ngx_conf_t *cf);
static void *ngx_http_ringman_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_ringman_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_ringman_create_srv_conf(ngx_conf_t *cf);
static void *ngx_http_ringman_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ringman_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_ringman_init_process(ngx_cycle_t *cycle);

static char *ngx_http_ringman_set_backend(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ringman_hash(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ringman_candidates(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

static ngx_int_t ngx_http_ringman_init_upstream(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_ringman_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_ringman_get_peer(ngx_peer_connection_t *pc,
    void *data);
static void ngx_http_ringman_free_peer(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state);

static void ngx_http_ringman_refresh(ngx_http_ringman_main_conf_t *mcf,
    ngx_log_t *log);
static void ngx_http_ringman_unref(void *data);


static ngx_conf_num_bounds_t  ngx_http_ringman_status_bounds = {
    ngx_conf_check_num_bounds, 400, 599
};


static ngx_command_t  ngx_http_ringman_commands[] = {

    { ngx_string("ringman_table_dir"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_ringman_main_conf_t, dir),
      NULL },

    { ngx_string("ringman_refresh"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_ringman_main_conf_t, refresh),
      NULL },

    { ngx_string("ringman_max_stale"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_ringman_main_conf_t, max_stale),
      NULL },

    { ngx_string("ringman_service"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ringman_loc_conf_t, default_service),
      NULL },

    { ngx_string("ringman_no_route_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ringman_loc_conf_t, no_route_status),
      &ngx_http_ringman_status_bounds },

    { ngx_string("set_backend"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE123,
      ngx_http_ringman_set_backend,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ringman_hash"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE123,
      ngx_http_ringman_hash,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ringman_candidates"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE123,
      ngx_http_ringman_candidates,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_ringman_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_ringman_postconf,             /* postconfiguration */

    ngx_http_ringman_create_main_conf,     /* create main configuration */
    ngx_http_ringman_init_main_conf,       /* init main configuration */

    ngx_http_ringman_create_srv_conf,      /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ringman_create_loc_conf,      /* create location configuration */
    ngx_http_ringman_merge_loc_conf        /* merge location configuration */
};


ngx_module_t  ngx_http_ringman_module = {
    NGX_MODULE_V1,
    &ngx_http_ringman_module_ctx,          /* module context */
    ngx_http_ringman_commands,             /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_ringman_init_process,         /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* Configuration. */

static void *
ngx_http_ringman_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_ringman_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ringman_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    mcf->refresh = NGX_CONF_UNSET_MSEC;
    mcf->max_stale = NGX_CONF_UNSET_MSEC;

    if (ngx_array_init(&mcf->services, cf->pool, 4,
                       sizeof(ngx_http_ringman_service_t *))
        != NGX_OK
        || ngx_array_init(&mcf->keys, cf->pool, 4,
                          sizeof(ngx_http_ringman_key_t *))
           != NGX_OK)
    {
        return NULL;
    }

    return mcf;
}


static char *
ngx_http_ringman_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_ringman_main_conf_t  *mcf = conf;

    if (mcf->dir.data == NULL) {
        ngx_str_set(&mcf->dir, NGX_HTTP_RINGMAN_DEFAULT_DIR);
    }

    /* A relative directory is relative to the prefix (-p). */
    if (ngx_conf_full_name(cf->cycle, &mcf->dir, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_msec_value(mcf->refresh, 100);
    ngx_conf_init_msec_value(mcf->max_stale, 30000);

    if (mcf->refresh == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ringman_refresh must be more than 0");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_ringman_create_srv_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_ringman_srv_conf_t));
}


static void *
ngx_http_ringman_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ringman_loc_conf_t  *lcf;

    lcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ringman_loc_conf_t));
    if (lcf == NULL) {
        return NULL;
    }

    lcf->index = NGX_CONF_UNSET;
    lcf->cand_unescape = NGX_CONF_UNSET;
    lcf->no_route_status = NGX_CONF_UNSET_UINT;

    return lcf;
}


/*
 * ngx_http_ringman_add_service returns the service called name, adding it
 * when it is new: every directive that names a service shares one table.
 */
static ngx_http_ringman_service_t *
ngx_http_ringman_add_service(ngx_conf_t *cf, ngx_str_t *name)
{
    u_char                         c;
    ngx_uint_t                     i;
    ngx_http_ringman_service_t   **sp, *s;
    ngx_http_ringman_main_conf_t  *mcf;

    /* FORMAT.md: only such names get a file, and none becomes a path. */
    if (name->len == 0 || name->data[0] == '.') {
        goto invalid;
    }

    for (i = 0; i < name->len; i++) {
        c = name->data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
        {
            goto invalid;
        }
    }

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ringman_module);

    sp = mcf->services.elts;
    for (i = 0; i < mcf->services.nelts; i++) {
        if (sp[i]->name.len == name->len
            && ngx_strncmp(sp[i]->name.data, name->data, name->len) == 0)
        {
            return sp[i];
        }
    }

    s = ngx_pcalloc(cf->pool, sizeof(ngx_http_ringman_service_t));
    if (s == NULL) {
        return NULL;
    }

    s->name = *name;
    s->bad_fd = NGX_INVALID_FILE;

    sp = ngx_array_push(&mcf->services);
    if (sp == NULL) {
        return NULL;
    }

    *sp = s;
    return s;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid ringman service name \"%V\": use letters, "
                       "digits, \".\", \"_\" and \"-\", not starting "
                       "with \".\"", name);
    return NULL;
}


/*
 * ngx_http_ringman_key_parts splits k's source into text and "$name" or
 * "${name}" parts, when it is made of nothing else (and has at most
 * NGX_HTTP_RINGMAN_KEY_PARTS): else nparts stays 0 and requests evaluate
 * the complex value (regex captures such as $1, for one).
 */
static ngx_int_t
ngx_http_ringman_key_parts(ngx_conf_t *cf, ngx_http_ringman_key_t *k)
{
    u_char                       *p, *end, *name;
    ngx_str_t                     var;
    ngx_uint_t                    n;
    ngx_http_ringman_key_part_t  *part;

    p = k->source.data;
    end = p + k->source.len;

    for (n = 0; p < end; n++) {
        if (n == NGX_HTTP_RINGMAN_KEY_PARTS) {
            return NGX_OK;
        }

        part = &k->parts[n];

        if (*p != '$') {
            part->index = NGX_ERROR;
            part->text.data = p;

            while (p < end && *p != '$') {
                p++;
            }

            part->text.len = p - part->text.data;
            continue;
        }

        p++;

        if (p < end && *p == '{') {
            name = ++p;

            while (p < end && *p != '}') {
                p++;
            }

            if (p == end) {
                return NGX_OK;   /* compile_complex_value refused it */
            }

            var.len = p++ - name;

        } else {
            name = p;

            while (p < end && (*p == '_' || (*p >= 'a' && *p <= 'z')
                               || (*p >= 'A' && *p <= 'Z')
                               || (*p >= '0' && *p <= '9')))
            {
                p++;
            }

            var.len = p - name;
        }

        if (var.len == 0 || (name[0] >= '0' && name[0] <= '9')) {
            return NGX_OK;
        }

        var.data = name;

        part->index = ngx_http_get_variable_index(cf, &var);
        if (part->index == NGX_ERROR) {
            return NGX_ERROR;
        }
    }

    k->nparts = n;

    return NGX_OK;
}


/*
 * ngx_http_ringman_key_value evaluates k for r into *key: into buf (of
 * size bytes) when it fits, else the request's pool.
 */
static ngx_int_t
ngx_http_ringman_key_value(ngx_http_request_t *r, ngx_http_ringman_key_t *k,
    u_char *buf, size_t size, ngx_str_t *key)
{
    u_char                     *p;
    size_t                      len;
    ngx_uint_t                  i;
    ngx_str_t                   part[NGX_HTTP_RINGMAN_KEY_PARTS];
    ngx_http_variable_value_t  *v;

    if (k->nparts == 0) {
        return ngx_http_complex_value(r, &k->cv, key);
    }

    len = 0;

    for (i = 0; i < k->nparts; i++) {
        if (k->parts[i].index == NGX_ERROR) {
            part[i] = k->parts[i].text;

        } else {
            v = ngx_http_get_flushed_variable(r, k->parts[i].index);

            if (v == NULL || v->not_found) {
                ngx_str_set(&part[i], "");  /* as the complex value has it */

            } else {
                part[i].data = v->data;
                part[i].len = v->len;
            }
        }

        len += part[i].len;
    }

    if (k->nparts == 1) {
        *key = part[0];
        return NGX_OK;
    }

    if (len > size) {
        buf = ngx_pnalloc(r->pool, len);
        if (buf == NULL) {
            return NGX_ERROR;
        }
    }

    key->data = buf;
    key->len = len;

    for (p = buf, i = 0; i < k->nparts; i++) {
        p = ngx_cpymem(p, part[i].data, part[i].len);
    }

    return NGX_OK;
}


/*
 * ngx_http_ringman_key_args parses "[KEY] [service=NAME]" from args[from..],
 * compiling KEY (default $host$uri) once per distinct text.
 */
static char *
ngx_http_ringman_key_args(ngx_conf_t *cf, ngx_uint_t from,
    ngx_http_ringman_key_t **key, ngx_str_t *service, ngx_flag_t *unescape,
    ngx_uint_t *factor)
{
    ngx_str_t                         *value, src;
    ngx_int_t                          n;
    ngx_uint_t                         i;
    ngx_http_ringman_key_t            *k, **kp;
    ngx_http_ringman_main_conf_t      *mcf;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;
    ngx_str_set(&src, NGX_HTTP_RINGMAN_DEFAULT_KEY);
    ngx_str_null(service);

    for (i = from; i < cf->args->nelts; i++) {
        if (ngx_strncmp(value[i].data, "service=", 8) == 0) {
            service->data = value[i].data + 8;
            service->len = value[i].len - 8;
            continue;
        }

        if (unescape && ngx_strcmp(value[i].data, "unescape") == 0) {
            *unescape = 1;
            continue;
        }

        if (factor && ngx_strncmp(value[i].data, "balance_factor=", 15) == 0) {
            n = ngx_atofp(value[i].data + 15, value[i].len - 15, 2);

            if (n == NGX_ERROR || n <= 100) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"%V\": want a factor over 1 "
                                   "with at most 2 decimals, e.g. 1.5",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            *factor = (ngx_uint_t) n;
            continue;
        }

        if (i != from) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        src = value[i];
    }

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ringman_module);

    kp = mcf->keys.elts;
    for (i = 0; i < mcf->keys.nelts; i++) {
        if (kp[i]->source.len == src.len
            && ngx_strncmp(kp[i]->source.data, src.data, src.len) == 0)
        {
            *key = kp[i];
            return NGX_CONF_OK;
        }
    }

    k = ngx_pcalloc(cf->pool, sizeof(ngx_http_ringman_key_t));
    if (k == NULL) {
        return NGX_CONF_ERROR;
    }

    k->source = src;

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &src;
    ccv.complex_value = &k->cv;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_ringman_key_parts(cf, k) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    kp = ngx_array_push(&mcf->keys);
    if (kp == NULL) {
        return NGX_CONF_ERROR;
    }

    *kp = k;
    *key = k;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ringman_unset_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    /* Read where no set_backend ran. */
    v->not_found = 1;
    return NGX_OK;
}


static char *
ngx_http_ringman_set_backend(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ringman_loc_conf_t *lcf = conf;

    ngx_str_t             *value;
    ngx_http_variable_t   *v;

    if (lcf->index != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len < 2 || value[1].data[0] != '$') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid variable name \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    value[1].len--;
    value[1].data++;

    v = ngx_http_add_variable(cf, &value[1], NGX_HTTP_VAR_CHANGEABLE);
    if (v == NULL) {
        return NGX_CONF_ERROR;
    }

    if (v->get_handler == NULL) {
        v->get_handler = ngx_http_ringman_unset_variable;
    }

    lcf->index = ngx_http_get_variable_index(cf, &value[1]);
    if (lcf->index == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_ringman_key_args(cf, 2, &lcf->key, &lcf->service_name,
                                     NULL, NULL);
}


static char *
ngx_http_ringman_candidates(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ringman_loc_conf_t *lcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (lcf->cand_key != NULL) {
        return "is duplicate";
    }

    lcf->cand_unescape = 0;

    if (ngx_http_ringman_key_args(cf, 1, &lcf->cand_key,
                                  &lcf->cand_service_name,
                                  &lcf->cand_unescape, NULL)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = NULL;   /* set at merge, once the service is known */

    return NGX_CONF_OK;
}


static ngx_int_t ngx_http_ringman_candidates_handler(ngx_http_request_t *r);


static char *
ngx_http_ringman_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ringman_loc_conf_t *prev = parent;
    ngx_http_ringman_loc_conf_t *conf = child;

    ngx_str_t                  *name;
    ngx_http_core_loc_conf_t   *clcf;

    ngx_conf_merge_str_value(conf->default_service, prev->default_service,
                             NGX_HTTP_RINGMAN_DEFAULT_SERVICE);
    ngx_conf_merge_uint_value(conf->no_route_status, prev->no_route_status,
                              NGX_HTTP_NOT_FOUND);

    if (conf->index == NGX_CONF_UNSET) {
        conf->index = prev->index;
        conf->key = prev->key;
        conf->service_name = prev->service_name;
    }

    if (conf->index != NGX_CONF_UNSET) {
        name = conf->service_name.len ? &conf->service_name
                                      : &conf->default_service;

        conf->service = ngx_http_ringman_add_service(cf, name);
        if (conf->service == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (conf->cand_key != NULL) {
        name = conf->cand_service_name.len ? &conf->cand_service_name
                                           : &conf->default_service;

        conf->cand_service = ngx_http_ringman_add_service(cf, name);
        if (conf->cand_service == NULL) {
            return NGX_CONF_ERROR;
        }

        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
        clcf->handler = ngx_http_ringman_candidates_handler;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ringman_init_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t  *shpool;

    if (data) {
        zone->data = data;      /* a reload keeps the counts in flight */
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (zone->shm.exists) {
        zone->data = shpool->data;
        return NGX_OK;
    }

    zone->data = ngx_slab_calloc(shpool, sizeof(ngx_http_ringman_shctx_t));
    if (zone->data == NULL) {
        return NGX_ERROR;
    }

    shpool->data = zone->data;

    return NGX_OK;
}


/* ngx_http_ringman_zone returns the counters' zone, adding it once. */
static ngx_shm_zone_t *
ngx_http_ringman_zone(ngx_conf_t *cf)
{
    ngx_str_t                      name = ngx_string("ringman_inflight");
    ngx_http_ringman_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ringman_module);

    if (mcf->zone == NULL) {
        mcf->zone = ngx_shared_memory_add(cf, &name,
                        2 * sizeof(ngx_http_ringman_shctx_t),
                        &ngx_http_ringman_module);
        if (mcf->zone == NULL) {
            return NULL;
        }

        mcf->zone->init = ngx_http_ringman_init_zone;
    }

    return mcf->zone;
}


/*
 * ngx_http_ringman_counter returns the counter keyed h, claiming a free
 * slot for a new key; NULL when the table is full (the instance is then
 * not balanced). Called when a table is loaded, never per request.
 */
static ngx_atomic_t *
ngx_http_ringman_counter(ngx_shm_zone_t *zone, uint64_t h)
{
    ngx_uint_t                   i, n;
    ngx_atomic_uint_t            key;
    ngx_http_ringman_shctx_t    *sh = zone->data;
    ngx_http_ringman_counter_t  *c;

    key = (ngx_atomic_uint_t) h;
    if (key == 0) {
        key = 1;                /* 0 marks a free slot */
    }

    i = key & (NGX_HTTP_RINGMAN_COUNTERS - 1);

    for (n = 0; n < NGX_HTTP_RINGMAN_COUNTERS; n++) {
        c = &sh->slots[i];

        if (c->key == key
            || (c->key == 0 && ngx_atomic_cmp_set(&c->key, 0, key))
            || c->key == key)
        {
            return &c->count;
        }

        i = (i + 1) & (NGX_HTTP_RINGMAN_COUNTERS - 1);
    }

    return NULL;
}


static char *
ngx_http_ringman_hash(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ringman_srv_conf_t *scf = conf;

    ngx_str_t                      name;
    ngx_http_upstream_server_t    *server;
    ngx_http_upstream_srv_conf_t  *uscf;

    if (scf->key != NULL) {
        return "is duplicate";
    }

    uscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_upstream_module);

    if (ngx_http_ringman_key_args(cf, 1, &scf->key, &name, NULL,
                                  &scf->factor)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* Default: the service named like the upstream. */
    if (name.len == 0) {
        name = uscf->host;
    }

    scf->service = ngx_http_ringman_add_service(cf, &name);
    if (scf->service == NULL) {
        return NGX_CONF_ERROR;
    }

    if (scf->factor) {
        scf->service->zone = ngx_http_ringman_zone(cf);
        if (scf->service->zone == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (uscf->peer.init_upstream) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "load balancing method redefined");
    }

    /*
     * Set before keepalive's directive (which must come after this one):
     * it saves this init_upstream and wraps the peers it makes.
     */
    uscf->peer.init_upstream = ngx_http_ringman_init_upstream;
    uscf->flags = NGX_HTTP_UPSTREAM_CREATE;

    /*
     * The peers come from the table, but nginx refuses an upstream block
     * without a server: a placeholder that nothing ever reads.
     */
    if (uscf->servers->nelts == 0) {
        server = ngx_array_push(uscf->servers);
        if (server == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(server, sizeof(ngx_http_upstream_server_t));
        ngx_str_set(&server->name, "ringman");
    }

    return NGX_CONF_OK;
}


static ngx_int_t ngx_http_ringman_handler(ngx_http_request_t *r);


static ngx_int_t
ngx_http_ringman_postconf(ngx_conf_t *cf)
{
    u_char                         *p;
    ngx_uint_t                      i;
    ngx_http_handler_pt            *h;
    ngx_http_core_main_conf_t      *cmcf;
    ngx_http_ringman_service_t    **sp, *s;
    ngx_http_ringman_main_conf_t   *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ringman_module);

    /* Every service is known now: the merges have run. */
    sp = mcf->services.elts;
    for (i = 0; i < mcf->services.nelts; i++) {
        s = sp[i];
        s->path.len = mcf->dir.len + 1 + s->name.len + sizeof(".table") - 1;

        s->path.data = ngx_pnalloc(cf->pool, s->path.len + 1);
        if (s->path.data == NULL) {
            return NGX_ERROR;
        }

        p = ngx_cpymem(s->path.data, mcf->dir.data, mcf->dir.len);
        *p++ = '/';
        p = ngx_cpymem(p, s->name.data, s->name.len);
        p = ngx_cpymem(p, ".table", sizeof(".table") - 1);
        *p = '\0';
    }

    /*
     * Preaccess: after every rewrite-phase `set` (a key may use them),
     * and unlike the access phase, untouched by `satisfy any`.
     */
    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ringman_handler;

    return NGX_OK;
}


/* Tables. */

static void
ngx_http_ringman_unref(void *data)
{
    ngx_http_ringman_table_t  *tbl = data;

    if (--tbl->refs > 0) {
        return;
    }

    if (ngx_close_file(tbl->fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, tbl->pool->log, ngx_errno,
                      ngx_close_file_n " table failed");
    }

    ngx_free(tbl->map);
    ngx_destroy_pool(tbl->pool);
}


/*
 * ngx_http_ringman_peer parses "IP:port" or "[IPv6]:port" into p; names
 * are not resolved (a blocking lookup would stall the worker).
 */
static ngx_int_t
ngx_http_ringman_peer(ngx_pool_t *pool, ngx_http_ringman_peer_t *p,
    const u_char *text, size_t len)
{
    ngx_addr_t  addr;

    p->name.data = (u_char *) text;
    p->name.len = len;

    ngx_memzero(&addr, sizeof(ngx_addr_t));

    if (ngx_parse_addr_port(pool, &addr, (u_char *) text, len) != NGX_OK
        || ngx_inet_get_port(addr.sockaddr) == 0)
    {
        return NGX_DECLINED;
    }

    p->sockaddr = addr.sockaddr;
    p->socklen = addr.socklen;

    return NGX_OK;
}


/*
 * ngx_http_ringman_mtime is fi's mtime in ms: with whole seconds, a
 * heartbeat every second could look up to 2 s old.
 */
static ngx_msec_t
ngx_http_ringman_mtime(ngx_file_info_t *fi)
{
    return (ngx_msec_t) fi->st_mtim.tv_sec * 1000
           + fi->st_mtim.tv_nsec / 1000000;
}


/*
 * ngx_http_ringman_forget_refused closes s's last refused file: it is no
 * longer at s's path, and its inode number may be given to a new file.
 */
static void
ngx_http_ringman_forget_refused(ngx_http_ringman_service_t *s, ngx_log_t *log)
{
    if (s->bad_fd == NGX_INVALID_FILE) {
        return;
    }

    if (ngx_close_file(s->bad_fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      ngx_close_file_n " refused table \"%V\" failed",
                      &s->path);
    }

    s->bad_fd = NGX_INVALID_FILE;
}


/*
 * ngx_http_ringman_rows sets tbl's candidate rows: the file's when every
 * instance is IP:port (skipped is 0), else copies without the others.
 */
static ngx_int_t
ngx_http_ringman_rows(ngx_pool_t *pool, ngx_http_ringman_table_t *tbl,
    ngx_uint_t skipped)
{
    u_char    *rows, *p;
    uint32_t   r, i, w, c;

    w = tbl->t.width;

    if (skipped == 0) {
        tbl->rows = tbl->t.rows;
        return NGX_OK;
    }

    rows = ngx_palloc(pool, (size_t) tbl->t.partitions * w * 2);
    tbl->row_len = ngx_palloc(pool, tbl->t.partitions);
    if (rows == NULL || tbl->row_len == NULL) {
        return NGX_ERROR;
    }

    for (r = 0; r < tbl->t.partitions; r++) {
        p = rows + (size_t) r * w * 2;

        for (i = 0; i < w; i++) {
            c = ringman_table_candidate(&tbl->t, r, i);

            if (tbl->instances[c].sockaddr) {
                *p++ = (u_char) c;
                *p++ = (u_char) (c >> 8);
            }
        }

        tbl->row_len[r] = (u_char) ((p - rows - (size_t) r * w * 2) / 2);
    }

    tbl->rows = rows;

    return NGX_OK;
}


/*
 * ngx_http_ringman_read_failed logs a system error met reading s's file
 * (once until a table loads again) and remembers the file's stat fi (the
 * path's, when it could not be opened), so that the same file is not read
 * again until it changes. A shortage of the worker's own (descriptors,
 * memory) is not the file's: remember is 0 then, and the next refresh
 * tries again.
 */
static void
ngx_http_ringman_read_failed(ngx_http_ringman_service_t *s, ngx_log_t *log,
    ngx_err_t err, const char *what, const char *why, ngx_file_info_t *fi,
    ngx_uint_t remember)
{
    if (!s->error_logged) {
        s->error_logged = 1;
        ngx_log_error(NGX_LOG_ERR, log, err,
                      "ringman: cannot %s table \"%V\"%s", what, &s->path,
                      why);
    }

    s->read_failed = remember;
    s->failed = *fi;
}


/*
 * ngx_http_ringman_same_file tells whether a and b are the stat of one
 * unchanged file: an edit, a chmod or a rename changes ctime.
 */
static ngx_uint_t
ngx_http_ringman_same_file(ngx_file_info_t *a, ngx_file_info_t *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino
           && a->st_size == b->st_size
           && a->st_mtim.tv_sec == b->st_mtim.tv_sec
           && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec
           && a->st_ctim.tv_sec == b->st_ctim.tv_sec
           && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}


/*
 * ngx_http_ringman_load reads, checks and swaps in s's file, whose path
 * had the stat path_fi, or logs why not.
 */
static void
ngx_http_ringman_load(ngx_http_ringman_service_t *s, ngx_log_t *log,
    ngx_file_info_t *path_fi)
{
    char                        err[160];
    size_t                      len, hlen;
    void                       *map;
    ssize_t                     n;
    uint32_t                    i;
    ngx_fd_t                    fd;
    ngx_err_t                   e;
    ngx_uint_t                  named;
    ngx_pool_t                 *pool;
    ngx_file_info_t             fi;
    const u_char               *str, *first, *backend;
    size_t                      first_len;
    uint64_t                    seed;
    ngx_http_ringman_table_t   *tbl;

    pool = NULL;

    fd = ngx_open_file(s->path.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        e = ngx_errno;
        ngx_http_ringman_read_failed(s, log, e, "open", "", path_fi,
                                     e != NGX_EMFILE && e != NGX_ENFILE
                                     && e != NGX_ENOMEM);
        return;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_http_ringman_read_failed(s, log, ngx_errno, "stat", "", path_fi,
                                     1);
        ngx_close_file(fd);
        return;
    }

    /*
     * Read, not mapped: a file written in place (a `cp` over it instead of
     * ringman's rename) must not change, or truncate (SIGBUS), the bytes
     * under the requests after they were checked. At least a byte: a file
     * too short for its header is refused by ringman_table_open, and
     * malloc(0) may give NULL.
     */
    map = ngx_alloc(ngx_max((size_t) fi.st_size, 1), log);
    if (map == NULL) {
        goto failed;
    }

    for (len = 0; len < (size_t) fi.st_size; len += n) {
        n = read(fd, (u_char *) map + len, (size_t) fi.st_size - len);

        if (n <= 0) {
            ngx_http_ringman_read_failed(s, log, n ? ngx_errno : 0, "read",
                                         n ? "" : ": it shrank while read",
                                         &fi, 1);
            goto failed;
        }
    }

    {
        ringman_table_t  t;

        if (ringman_table_open(&t, map, (size_t) fi.st_size, err, sizeof(err))
            != 0)
        {
            goto refused;
        }

        pool = ngx_create_pool(4096, log);
        if (pool == NULL) {
            goto failed;
        }

        tbl = ngx_pcalloc(pool, sizeof(ngx_http_ringman_table_t));
        if (tbl == NULL) {
            goto failed;
        }

        tbl->t = t;
    }

    tbl->pool = pool;
    tbl->map = map;
    tbl->map_size = (size_t) fi.st_size;
    tbl->fd = fd;

    tbl->instances = ngx_pcalloc(pool, (tbl->t.instances + 1)
                                       * sizeof(ngx_http_ringman_peer_t));
    tbl->overrides = ngx_pcalloc(pool, (tbl->t.slots + 1)
                                       * sizeof(ngx_http_ringman_peer_t));
    if (tbl->instances == NULL || tbl->overrides == NULL) {
        goto failed;
    }

    named = 0;
    first = NULL;
    first_len = 0;

    for (i = 0; i < tbl->t.instances; i++) {
        str = ringman_table_instance(&tbl->t, i, &len);

        if (ngx_http_ringman_peer(pool, &tbl->instances[i], str, len)
            != NGX_OK)
        {
            if (named++ == 0) {
                first = str;
                first_len = len;
            }
        }
    }

    if (ngx_http_ringman_rows(pool, tbl, named) != NGX_OK) {
        goto failed;
    }

    for (i = 0; i < tbl->t.slots; i++) {
        if (ringman_table_override(&tbl->t, i, &hlen, &backend, &len) == NULL) {
            continue;
        }

        if (ngx_http_ringman_peer(pool, &tbl->overrides[i], backend, len)
            != NGX_OK)
        {
            if (named++ == 0) {
                first = backend;
                first_len = len;
            }
        }
    }

    if (s->zone) {
        seed = ringman_table_hash(s->name.data, s->name.len, 0);
        tbl->inflight = ngx_http_ringman_counter(s->zone, seed + 1);

        for (i = 0; tbl->inflight && i < tbl->t.instances; i++) {
            str = ringman_table_instance(&tbl->t, i, &len);
            tbl->instances[i].inflight = ngx_http_ringman_counter(s->zone,
                                         ringman_table_hash(str, len, seed));
        }
    }

    if (named) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "ringman: table \"%V\": %ui backends are not IP:port "
                      "(first: \"%*s\"); the module does not resolve names, "
                      "so they are skipped (advertise IP:port)",
                      &s->path, named, first_len, first);
    }

    ngx_log_error(NGX_LOG_INFO, log, 0,
                  "ringman: table \"%V\" epoch %016uxL in use: %uD partitions,"
                  " %uD instances, %uD overrides", &s->path, tbl->t.epoch,
                  tbl->t.partitions, tbl->t.instances, tbl->t.overrides);

    /* Said once here, not per request. */
    if (tbl->t.partitions == 0
        && (s->table == NULL || s->table->t.partitions != 0))
    {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "ringman: table \"%V\": service \"%V\" has no live "
                      "instance: keys without an override have no route",
                      &s->path, &s->name);
    }

    tbl->refs = 1;

    if (s->table) {
        ngx_http_ringman_unref(s->table);
    }

    s->table = tbl;
    s->dev = fi.st_dev;
    s->ino = fi.st_ino;
    s->size = fi.st_size;
    s->mtime = ngx_http_ringman_mtime(&fi);
    s->missing_logged = 0;
    s->error_logged = 0;
    s->read_failed = 0;

    return;

refused:

    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "ringman: table \"%V\" refused: %s; %s", &s->path, err,
                  s->table ? "the previous table stays in use"
                           : "no table in use yet");

    ngx_http_ringman_forget_refused(s, log);

    s->bad_fd = fd;
    s->bad_dev = fi.st_dev;
    s->bad_ino = fi.st_ino;
    s->bad_size = fi.st_size;

    fd = NGX_INVALID_FILE;

failed:

    if (pool) {
        ngx_destroy_pool(pool);
    }

    if (map != NULL) {
        ngx_free(map);
    }

    if (fd != NGX_INVALID_FILE) {
        ngx_close_file(fd);
    }
}


/* ngx_http_ringman_reload loads s's file when it is not the one in use. */
static void
ngx_http_ringman_reload(ngx_http_ringman_service_t *s, ngx_log_t *log)
{
    ngx_err_t        err;
    ngx_uint_t       level;
    ngx_file_info_t  fi;

    if (ngx_file_info(s->path.data, &fi) == NGX_FILE_ERROR) {
        err = ngx_errno;

        ngx_http_ringman_forget_refused(s, log);

        if (!s->missing_logged) {
            s->missing_logged = 1;
            level = (err == NGX_ENOENT) ? NGX_LOG_WARN : NGX_LOG_ERR;
            ngx_log_error(level, log, err, "ringman: no table \"%V\" (%s)",
                          &s->path,
                          s->table ? "the last one is used until it is "
                                     "stale" : "no routing until there is one");
        }

        return;
    }

    /*
     * ringman renames a new file over the old one: a new inode. The table
     * in use keeps its file open, so its inode number cannot be reused by
     * a later file meanwhile. An unchanged file only tells, by its mtime,
     * that its node is alive.
     */
    if (s->table && fi.st_dev == s->dev && fi.st_ino == s->ino
        && fi.st_size == s->size)
    {
        s->mtime = ngx_http_ringman_mtime(&fi);
        return;
    }

    /*
     * A refused file is kept open for the same reason, until another file
     * is at the path: else, once it is gone, a good file given its inode
     * number (ext4 does at once) and of the same size (a table of the same
     * shape) would be taken for it and never read.
     */
    if (s->bad_fd != NGX_INVALID_FILE) {
        if (fi.st_dev == s->bad_dev && fi.st_ino == s->bad_ino
            && fi.st_size == s->bad_size)
        {
            /* Refused already, and logged; a heartbeat changes nothing. */
            return;
        }

        ngx_http_ringman_forget_refused(s, log);
    }

    /* A file that could not be read is read again once it changes. */
    if (s->read_failed && ngx_http_ringman_same_file(&fi, &s->failed)) {
        return;
    }

    ngx_http_ringman_load(s, log, &fi);
}


/*
 * ngx_http_ringman_check_stale decides whether requests may use s's table:
 * its file touched within max_stale. Requests only read s->usable.
 */
static void
ngx_http_ringman_check_stale(ngx_http_ringman_main_conf_t *mcf,
    ngx_http_ringman_service_t *s, ngx_log_t *log)
{
    ngx_msec_t   now;
    ngx_time_t  *tp;

    if (s->table == NULL) {
        s->usable = NULL;
        return;
    }

    if (mcf->max_stale) {
        tp = ngx_timeofday();
        now = (ngx_msec_t) tp->sec * 1000 + tp->msec;

        if (now > s->mtime && now - s->mtime > mcf->max_stale) {
            if (!s->stale) {
                s->stale = 1;
                ngx_log_error(NGX_LOG_ERR, log, 0,
                              "ringman: table \"%V\" was last touched "
                              "%M ms ago, more than ringman_max_stale (is "
                              "its ringman node running?): 503 until it is "
                              "touched again", &s->path, now - s->mtime);
            }

            s->usable = NULL;
            return;
        }
    }

    if (s->stale) {
        s->stale = 0;
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "ringman: table \"%V\" is fresh again, in use",
                      &s->path);
    }

    s->usable = s->table;
}


static void
ngx_http_ringman_refresh(ngx_http_ringman_main_conf_t *mcf, ngx_log_t *log)
{
    ngx_uint_t                    i;
    ngx_http_ringman_service_t  **sp;

    sp = mcf->services.elts;

    for (i = 0; i < mcf->services.nelts; i++) {
        ngx_http_ringman_reload(sp[i], log);
        ngx_http_ringman_check_stale(mcf, sp[i], log);
    }
}


static void
ngx_http_ringman_timer(ngx_event_t *ev)
{
    ngx_http_ringman_main_conf_t  *mcf = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_http_ringman_refresh(mcf, ev->log);
    ngx_add_timer(ev, mcf->refresh);
}


static ngx_int_t
ngx_http_ringman_init_process(ngx_cycle_t *cycle)
{
    ngx_http_ringman_main_conf_t  *mcf;

    /* Not in the cache manager and loader, which init like workers. */
    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_ringman_module);

    if (mcf == NULL || mcf->services.nelts == 0) {
        return NGX_OK;
    }

    ngx_http_ringman_refresh(mcf, cycle->log);

    mcf->timer.handler = ngx_http_ringman_timer;
    mcf->timer.data = mcf;
    mcf->timer.log = cycle->log;
    mcf->timer.cancelable = 1;   /* a graceful quit does not wait for it */

    ngx_add_timer(&mcf->timer, mcf->refresh);

    return NGX_OK;
}


/*
 * ngx_http_ringman_request looks key up in service s for r and makes the
 * answer the request's, or returns NULL (r's status in *status). The table
 * it holds stays referenced until the request's pool is destroyed.
 */
static ngx_http_ringman_request_t *
ngx_http_ringman_request(ngx_http_request_t *r, ngx_http_ringman_service_t *s,
    ngx_http_ringman_key_t *key, ngx_int_t *status)
{
    u_char                       buf[512];
    ngx_str_t                    text;
    ngx_pool_cleanup_t          *cln;
    ngx_http_ringman_table_t    *tbl;
    ngx_http_ringman_request_t  *rq;

    /* The refresh timer logged why, once. */
    tbl = s->usable;
    if (tbl == NULL) {
        *status = NGX_HTTP_SERVICE_UNAVAILABLE;
        return NULL;
    }

    if (ngx_http_ringman_key_value(r, key, buf, sizeof(buf), &text)
        != NGX_OK)
    {
        *status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NULL;
    }

    /* Not zeroed: the balancer's peer init sets its own fields. */
    rq = ngx_palloc(r->pool, sizeof(ngx_http_ringman_request_t));
    if (rq == NULL) {
        *status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NULL;
    }

    ringman_table_lookup(&tbl->t, text.data, text.len, &rq->a);

    rq->service = s;
    rq->key = key;
    rq->table = tbl;

    /* ngx_pool_cleanup_add() without its allocation: rq is in the pool. */
    cln = &rq->cleanup;
    cln->handler = ngx_http_ringman_unref;
    cln->data = tbl;
    cln->next = r->pool->cleanup;
    r->pool->cleanup = cln;
    tbl->refs++;

    ngx_http_set_ctx(r, rq, ngx_http_ringman_module);

    return rq;
}


/* set_backend, in the preaccess phase. */

static ngx_int_t
ngx_http_ringman_handler(ngx_http_request_t *r)
{
    size_t                        len;
    ngx_int_t                     status;
    const u_char                 *backend;
    ngx_http_ringman_peer_t      *owner;
    ngx_http_variable_value_t    *v;
    ngx_http_ringman_request_t   *rq;
    ngx_http_ringman_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_ringman_module);

    if (lcf->service == NULL) {
        return NGX_DECLINED;
    }

    rq = ngx_http_ringman_request(r, lcf->service, lcf->key, &status);
    if (rq == NULL) {
        return status;
    }

    switch (rq->a.kind) {

    case RINGMAN_OVERRIDE:
        backend = rq->a.backend;
        len = rq->a.backend_len;
        break;

    case RINGMAN_ROW:
        owner = &rq->table->instances[ringman_table_candidate(&rq->table->t,
                                                              rq->a.row, 0)];
        backend = owner->name.data;
        len = owner->name.len;
        break;

    default:
        return lcf->no_route_status;
    }

    /* The table's own bytes: rq keeps it until the request ends. */
    v = &r->variables[lcf->index];
    v->data = (u_char *) backend;
    v->len = len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_DECLINED;
}


/* ringman_candidates: what the table answers for a key, for operators. */

static ngx_int_t
ngx_http_ringman_candidates_handler(ngx_http_request_t *r)
{
    u_char                       *p, *dst, *src, buf[512];
    size_t                        len, size;
    ngx_int_t                     rc;
    ngx_str_t                     key;
    ngx_buf_t                    *b;
    uint32_t                      i;
    ngx_chain_t                   out;
    const u_char                 *inst;
    ringman_answer_t              a;
    ngx_http_ringman_table_t     *tbl;
    ngx_http_ringman_loc_conf_t  *lcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_ringman_module);

    tbl = lcf->cand_service->usable;
    if (tbl == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    if (ngx_http_ringman_key_value(r, lcf->cand_key, buf, sizeof(buf), &key)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (lcf->cand_unescape) {
        /* Into a copy: the key may be a variable's or the configuration's. */
        dst = ngx_pnalloc(r->pool, key.len);
        if (dst == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        src = key.data;
        key.data = dst;
        ngx_unescape_uri(&dst, &src, key.len, 0);
        key.len = dst - key.data;
    }

    ringman_table_lookup(&tbl->t, key.data, key.len, &a);

    /* "override", "ring" or "none", then one candidate per line. */
    size = sizeof("override\n") - 1;

    if (a.kind == RINGMAN_OVERRIDE) {
        size += a.backend_len + 1;

    } else if (a.kind == RINGMAN_ROW) {
        for (i = 0; i < tbl->t.width; i++) {
            (void) ringman_table_instance(&tbl->t,
                       ringman_table_candidate(&tbl->t, a.row, i), &len);
            size += len + 1;
        }
    }

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = b->last;

    switch (a.kind) {

    case RINGMAN_OVERRIDE:
        p = ngx_cpymem(p, "override\n", sizeof("override\n") - 1);
        p = ngx_cpymem(p, a.backend, a.backend_len);
        *p++ = '\n';
        break;

    case RINGMAN_ROW:
        p = ngx_cpymem(p, "ring\n", sizeof("ring\n") - 1);

        for (i = 0; i < tbl->t.width; i++) {
            inst = ringman_table_instance(&tbl->t,
                       ringman_table_candidate(&tbl->t, a.row, i), &len);
            p = ngx_cpymem(p, inst, len);
            *p++ = '\n';
        }

        break;

    default:
        p = ngx_cpymem(p, "none\n", sizeof("none\n") - 1);
    }

    b->last = p;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "text/plain");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* The balancer. */

static ngx_int_t
ngx_http_ringman_init_upstream(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us)
{
    us->peer.init = ngx_http_ringman_init_peer;
    return NGX_OK;
}


/*
 * With no usable table, no answer, or no candidate that is IP:port, the
 * balancer gives nginx no peer and nginx answers 502. It logs nothing
 * per request: the refresh logged once why the table is missing, stale,
 * empty or has names in it.
 */
static ngx_int_t
ngx_http_ringman_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_int_t                      status;
    ngx_http_ringman_table_t      *tbl;
    ngx_http_ringman_request_t    *rq;
    ngx_http_ringman_srv_conf_t   *scf;

    scf = ngx_http_conf_upstream_srv_conf(us, ngx_http_ringman_module);

    /* set_backend's answer when it asked the same service with this key. */
    rq = ngx_http_get_module_ctx(r, ngx_http_ringman_module);

    if (rq == NULL || rq->service != scf->service || rq->key != scf->key) {
        rq = ngx_http_ringman_request(r, scf->service, scf->key, &status);
    }

    if (rq == NULL) {
        if (status == NGX_HTTP_INTERNAL_SERVER_ERROR) {
            return NGX_ERROR;
        }

        /* Peer data that gives no peer. */
        rq = ngx_pcalloc(r->pool, sizeof(ngx_http_ringman_request_t));
        if (rq == NULL) {
            return NGX_ERROR;
        }

    } else {
        tbl = rq->table;

        /* Set anew: a second upstream of the same request starts over. */
        rq->row = NULL;
        rq->override = NULL;
        rq->n = 0;
        rq->tried = 0;
        rq->used = 0;
        rq->current = NULL;

        if (rq->a.kind == RINGMAN_OVERRIDE) {
            if (tbl->overrides[rq->a.slot].sockaddr) {
                rq->override = &tbl->overrides[rq->a.slot];
                rq->n = 1;
            }

        } else if (rq->a.kind == RINGMAN_ROW) {
            rq->row = tbl->rows + (size_t) rq->a.row * tbl->t.width * 2;
            rq->n = tbl->row_len ? tbl->row_len[rq->a.row] : tbl->t.width;
        }
    }

    rq->factor = scf->factor;

    r->upstream->peer.data = rq;
    r->upstream->peer.get = ngx_http_ringman_get_peer;
    r->upstream->peer.free = ngx_http_ringman_free_peer;

    /* One try per candidate: proxy_next_upstream moves down the row. */
    r->upstream->peer.tries = rq->n ? rq->n : 1;

    return NGX_OK;
}


/* ngx_http_ringman_candidate returns pd's candidate i (i < n). */
static ngx_inline ngx_http_ringman_peer_t *
ngx_http_ringman_candidate(ngx_http_ringman_request_t *pd, ngx_uint_t i)
{
    if (pd->row == NULL) {
        return pd->override;
    }

    return &pd->table->instances[pd->row[2 * i] | pd->row[2 * i + 1] << 8];
}


static ngx_int_t
ngx_http_ringman_get_peer(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_ringman_request_t  *pd = data;

    ngx_uint_t                 i, pick, n, cap;
    ngx_http_ringman_peer_t   *peer;

    if (pd->tried >= pd->n) {
        pc->tries = 0;

        /*
         * No candidate at all: NGX_DECLINED, a 502 that nginx does not log
         * (NGX_BUSY would log "no live upstreams" per request). All tried:
         * NGX_BUSY, which nginx logs as for its own balancers.
         */
        return pd->n ? NGX_BUSY : NGX_DECLINED;
    }

    /* The first candidate not tried yet... */
    for (pick = 0; pd->used & ((ngx_uint_t) 1 << pick); pick++) {
        /* void */
    }

    /*
     * ...unless it carries more than its share (bounded loads): then the
     * first one under ceil(factor x (in flight + 1) / instances).
     */
    /*
     * (An override's single peer on a service with no instance left has
     * nothing to balance against, and n would be 0.)
     */
    if (pd->factor && pd->table->inflight && pd->table->t.instances > 0) {
        n = pd->table->t.instances;
        cap = (pd->factor * (*pd->table->inflight + 1) + 100 * n - 1)
              / (100 * n);

        for (i = pick; i < pd->n; i++) {
            if (pd->used & ((ngx_uint_t) 1 << i)) {
                continue;
            }

            peer = ngx_http_ringman_candidate(pd, i);

            if (peer->inflight == NULL || *peer->inflight < cap) {
                pick = i;
                break;
            }
        }
    }

    pd->used |= (ngx_uint_t) 1 << pick;
    pd->tried++;

    peer = ngx_http_ringman_candidate(pd, pick);

    if (pd->factor && peer->inflight && pd->table->inflight) {
        (void) ngx_atomic_fetch_add(peer->inflight, 1);
        (void) ngx_atomic_fetch_add(pd->table->inflight, 1);
        pd->current = peer;
    }

    pc->sockaddr = peer->sockaddr;
    pc->socklen = peer->socklen;
    pc->name = &peer->name;

    return NGX_OK;
}


static void
ngx_http_ringman_free_peer(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state)
{
    ngx_http_ringman_request_t  *pd = data;

    if (pd->current) {
        (void) ngx_atomic_fetch_add(pd->current->inflight, -1);
        (void) ngx_atomic_fetch_add(pd->table->inflight, -1);
        pd->current = NULL;
    }

    if (pc->tries) {
        pc->tries--;
    }
}
