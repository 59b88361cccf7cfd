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
 * a table whose file is older than ringman_max_stale is not used (503).
 *
 * Two ways to use an answer:
 *   set_backend $backend [KEY] [service=NAME];   (preaccess phase)
 *     sets $backend to the owner's "host:port", or ends the request with
 *     ringman_no_route_status (404) / 503 (no fresh table);
 *   upstream NAME { ringman_hash KEY [service=NAME]; keepalive N; }
 *     a balancer: tries the candidates in order (tries = W), and chains
 *     under keepalive as nginx's hash module does.
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
    ngx_atomic_t                   *inflight;   /* the service's total */
} ngx_http_ringman_table_t;


typedef struct {
    ngx_str_t                       name;
    ngx_str_t                       path;       /* NUL-terminated */
    ngx_shm_zone_t                 *zone;       /* counters, or NULL */

    /* per worker */
    ngx_http_ringman_table_t       *table;
    dev_t                           dev;        /* of table's file */
    ino_t                           ino;
    off_t                           size;
    ngx_msec_t                      mtime;      /* last seen, ms since 1970 */

    ngx_fd_t                        bad_fd;     /* last refused file, */
    dev_t                           bad_dev;    /* kept open: see refresh */
    ino_t                           bad_ino;
    off_t                           bad_size;

    unsigned                        missing_logged:1;
    unsigned                        error_logged:1;  /* open, read, ... */
    unsigned                        stale_logged:1;
} ngx_http_ringman_service_t;


typedef struct {
    ngx_str_t                       dir;
    ngx_msec_t                      refresh;
    ngx_msec_t                      max_stale;  /* 0: off */
    ngx_array_t                     services;   /* of service pointers */
    ngx_event_t                     timer;
    ngx_shm_zone_t                 *zone;       /* balance_factor's counters */
} ngx_http_ringman_main_conf_t;


typedef struct {
    ngx_http_complex_value_t       *key;
    ngx_http_ringman_service_t     *service;
    ngx_uint_t                      factor;     /* x 100; 0: off */
} ngx_http_ringman_srv_conf_t;


typedef struct {
    /* set_backend */
    ngx_int_t                       index;      /* NGX_CONF_UNSET: none */
    ngx_http_complex_value_t       *key;
    ngx_str_t                       service_name;
    ngx_http_ringman_service_t     *service;

    /* ringman_candidates */
    ngx_http_complex_value_t       *cand_key;
    ngx_str_t                       cand_service_name;
    ngx_http_ringman_service_t     *cand_service;
    ngx_flag_t                      cand_unescape;

    ngx_str_t                       default_service;
    ngx_uint_t                      no_route_status;
} ngx_http_ringman_loc_conf_t;


typedef struct {
    ngx_http_ringman_table_t       *table;
    ngx_uint_t                      n;
    ngx_uint_t                      tried;
    ngx_uint_t                      used;       /* bit i: peers[i] tried */
    ngx_uint_t                      factor;
    ngx_http_ringman_peer_t        *current;    /* counted in flight */
    ngx_http_ringman_peer_t        *peers[RINGMAN_TABLE_MAX_WIDTH];
} ngx_http_ringman_peer_data_t;


/*
 * What set_backend answered, for the balancer of the same request: when it
 * asks the same service for the same key, the answer is reused instead of
 * evaluated and looked up again (module.conf uses both). The table is
 * referenced, so the row and slot stay valid even if a newer table is
 * swapped in meanwhile. The key is then evaluated once, in preaccess:
 * what changes it later in the same location (a try_files that rewrites
 * $uri, auth_request_set) does not move the request.
 */
typedef struct {
    ngx_http_ringman_service_t     *service;
    ngx_http_ringman_table_t       *table;
    ngx_str_t                       key;        /* the key's source text */
    ringman_answer_t                a;
} ngx_http_ringman_ctx_t;


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
 * ngx_http_ringman_key_args parses "[KEY] [service=NAME]" from args[from..],
 * compiling KEY (default $host$uri).
 */
static char *
ngx_http_ringman_key_args(ngx_conf_t *cf, ngx_uint_t from,
    ngx_http_complex_value_t **key, ngx_str_t *service, ngx_flag_t *unescape,
    ngx_uint_t *factor)
{
    ngx_str_t                         *value, src;
    ngx_int_t                          n;
    ngx_uint_t                         i;
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

    *key = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (*key == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &src;
    ccv.complex_value = *key;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

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


/* ngx_http_ringman_load reads, checks and swaps in s's file, or logs why not. */
static void
ngx_http_ringman_load(ngx_http_ringman_service_t *s, ngx_log_t *log)
{
    char                        err[160];
    size_t                      len, hlen;
    void                       *map;
    ssize_t                     n;
    uint32_t                    i;
    ngx_fd_t                    fd;
    ngx_uint_t                  named;
    ngx_pool_t                 *pool;
    ngx_file_info_t             fi;
    const u_char               *str, *first, *backend;
    size_t                      first_len;
    uint64_t                    seed;
    ngx_http_ringman_table_t   *tbl;

    pool = NULL;

    /*
     * A system error is retried on every refresh, and logged once until
     * a table loads again.
     */
    fd = ngx_open_file(s->path.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        if (!s->error_logged) {
            s->error_logged = 1;
            ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                          "ringman: cannot open table \"%V\"", &s->path);
        }

        return;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        if (!s->error_logged) {
            s->error_logged = 1;
            ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                          "ringman: cannot stat table \"%V\"", &s->path);
        }

        ngx_close_file(fd);
        return;
    }

    map = NULL;

    if (fi.st_size < RINGMAN_TABLE_HEADER_SIZE) {
        ngx_sprintf((u_char *) err, "file of %O bytes, shorter than the "
                    "header%Z", fi.st_size);
        goto refused;
    }

    /*
     * Read, not mapped: a file written in place (a `cp` over it instead of
     * ringman's rename) must not change, or truncate (SIGBUS), the bytes
     * under the requests after they were checked.
     */
    map = ngx_alloc((size_t) fi.st_size, log);
    if (map == NULL) {
        goto failed;
    }

    for (len = 0; len < (size_t) fi.st_size; len += n) {
        n = read(fd, (u_char *) map + len, (size_t) fi.st_size - len);

        if (n <= 0) {
            if (!s->error_logged) {
                s->error_logged = 1;
                ngx_log_error(NGX_LOG_ERR, log, n ? ngx_errno : 0,
                              "ringman: cannot read table \"%V\"%s",
                              &s->path, n ? "" : ": it shrank while read");
            }

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
    s->stale_logged = 0;
    s->error_logged = 0;

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


static void
ngx_http_ringman_refresh(ngx_http_ringman_main_conf_t *mcf, ngx_log_t *log)
{
    ngx_err_t                     err;
    ngx_msec_t                    mtime;
    ngx_uint_t                    i, level;
    ngx_file_info_t               fi;
    ngx_http_ringman_service_t  **sp, *s;

    sp = mcf->services.elts;

    for (i = 0; i < mcf->services.nelts; i++) {
        s = sp[i];

        if (ngx_file_info(s->path.data, &fi) == NGX_FILE_ERROR) {
            err = ngx_errno;

            ngx_http_ringman_forget_refused(s, log);

            if (!s->missing_logged) {
                s->missing_logged = 1;
                level = (err == NGX_ENOENT) ? NGX_LOG_WARN : NGX_LOG_ERR;
                ngx_log_error(level, log, err, "ringman: no table \"%V\" (%s)",
                              &s->path,
                              s->table ? "the last one is used until it is "
                                         "stale" : "503 until there is one");
            }

            continue;
        }

        /*
         * ringman renames a new file over the old one: a new inode. The
         * table in use keeps its file open, so its inode number cannot be
         * reused by a later file meanwhile. An unchanged file only tells,
         * by its mtime, that its node is alive.
         */
        if (s->table && fi.st_dev == s->dev && fi.st_ino == s->ino
            && fi.st_size == s->size)
        {
            mtime = ngx_http_ringman_mtime(&fi);

            if (mtime != s->mtime) {
                s->mtime = mtime;
                s->stale_logged = 0;    /* a later staleness is news */
            }

            continue;
        }

        /*
         * A refused file is kept open for the same reason, until another
         * file is at the path: else, once it is gone, a good file given
         * its inode number (ext4 does at once) and of the same size (a
         * table of the same shape) would be taken for it and never read.
         */
        if (s->bad_fd != NGX_INVALID_FILE) {
            if (fi.st_dev == s->bad_dev && fi.st_ino == s->bad_ino
                && fi.st_size == s->bad_size)
            {
                /* Refused already, and logged; a heartbeat changes nothing. */
                continue;
            }

            ngx_http_ringman_forget_refused(s, log);
        }

        ngx_http_ringman_load(s, log);
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
 * ngx_http_ringman_fresh returns s's table when it may be used: loaded, and
 * its file touched within max_stale.
 */
static ngx_http_ringman_table_t *
ngx_http_ringman_fresh(ngx_http_request_t *r, ngx_http_ringman_service_t *s)
{
    ngx_time_t                    *tp;
    ngx_msec_t                     now;
    ngx_http_ringman_main_conf_t  *mcf;

    if (s->table == NULL) {
        return NULL;    /* the refresh logged why, once */
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_ringman_module);

    if (mcf->max_stale) {
        tp = ngx_timeofday();
        now = (ngx_msec_t) tp->sec * 1000 + tp->msec;

        if (now > s->mtime && now - s->mtime > mcf->max_stale) {
            if (!s->stale_logged) {
                s->stale_logged = 1;
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "ringman: table \"%V\" was last touched "
                              "%M ms ago, more than ringman_max_stale (is "
                              "its ringman node running?): 503 until it is "
                              "touched again", &s->path, now - s->mtime);
            }

            return NULL;
        }
    }

    return s->table;
}


/*
 * Each request's key is built in one buffer per worker, grown only for a
 * key longer than any before: ngx_http_complex_value() takes it from the
 * request's pool, which sends a key over the pool's block (about 4 kB, a
 * long URI) to malloc(), once in set_backend and again in the balancer.
 * Nothing keeps a key past its lookup.
 */
static u_char   ngx_http_ringman_key_static[1024];
static u_char  *ngx_http_ringman_key_buf = ngx_http_ringman_key_static;
static size_t   ngx_http_ringman_key_size = sizeof(ngx_http_ringman_key_static);


/* ngx_http_ringman_key is ngx_http_complex_value() into that buffer. */
static ngx_int_t
ngx_http_ringman_key(ngx_http_request_t *r, ngx_http_complex_value_t *cv,
    ngx_str_t *key)
{
    u_char                       *p;
    size_t                        len, size;
    ngx_http_script_code_pt       code;
    ngx_http_script_len_code_pt   lcode;
    ngx_http_script_engine_t      e;

    if (cv->lengths == NULL) {
        len = cv->value.len;

    } else {
        ngx_http_script_flush_complex_value(r, cv);

        ngx_memzero(&e, sizeof(ngx_http_script_engine_t));

        e.ip = cv->lengths;
        e.request = r;
        e.flushed = 1;

        len = 0;

        while (*(uintptr_t *) e.ip) {
            lcode = *(ngx_http_script_len_code_pt *) e.ip;
            len += lcode(&e);
        }
    }

    if (len > ngx_http_ringman_key_size) {
        size = ngx_max(len, 2 * ngx_http_ringman_key_size);

        p = ngx_alloc(size, r->connection->log);
        if (p == NULL) {
            return NGX_ERROR;
        }

        if (ngx_http_ringman_key_buf != ngx_http_ringman_key_static) {
            ngx_free(ngx_http_ringman_key_buf);
        }

        ngx_http_ringman_key_buf = p;
        ngx_http_ringman_key_size = size;
    }

    key->data = ngx_http_ringman_key_buf;
    key->len = len;

    /* A constant key is copied too: unescape decodes the copy in place. */
    if (cv->lengths == NULL) {
        if (len) {
            ngx_memcpy(key->data, cv->value.data, len);
        }

        return NGX_OK;
    }

    e.ip = cv->values;
    e.pos = key->data;
    e.buf = *key;

    while (*(uintptr_t *) e.ip) {
        code = *(ngx_http_script_code_pt *) e.ip;
        code((ngx_http_script_engine_t *) &e);
    }

    *key = e.buf;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ringman_answer(ngx_http_request_t *r, ngx_http_ringman_table_t *tbl,
    ngx_http_complex_value_t *cv, ngx_flag_t unescape, ringman_answer_t *a)
{
    u_char     *dst, *src;
    ngx_str_t   key;

    if (ngx_http_ringman_key(r, cv, &key) != NGX_OK) {
        return NGX_ERROR;
    }

    if (unescape) {
        /* In place: no byte decodes into more than it took. */
        dst = key.data;
        src = key.data;
        ngx_unescape_uri(&dst, &src, key.len, 0);
        key.len = dst - key.data;
    }

    ringman_table_lookup(&tbl->t, key.data, key.len, a);

    return NGX_OK;
}


/* set_backend, in the preaccess phase. */

static ngx_int_t
ngx_http_ringman_handler(ngx_http_request_t *r)
{
    u_char                       *p;
    size_t                        len;
    const u_char                 *backend;
    ringman_answer_t              a;
    ngx_pool_cleanup_t           *cln;
    ngx_http_ringman_ctx_t       *ctx;
    ngx_http_variable_value_t    *v;
    ngx_http_ringman_table_t     *tbl;
    ngx_http_ringman_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_ringman_module);

    if (lcf->service == NULL) {
        return NGX_DECLINED;
    }

    tbl = ngx_http_ringman_fresh(r, lcf->service);
    if (tbl == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    if (ngx_http_ringman_answer(r, tbl, lcf->key, 0, &a) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    switch (a.kind) {

    case RINGMAN_OVERRIDE:
        backend = a.backend;
        len = a.backend_len;
        break;

    case RINGMAN_ROW:
        backend = ringman_table_instance(&tbl->t,
                      ringman_table_candidate(&tbl->t, a.row, 0), &len);
        break;

    default:
        return lcf->no_route_status;
    }

    ctx = ngx_palloc(r->pool, sizeof(ngx_http_ringman_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    tbl->refs++;
    cln->handler = ngx_http_ringman_unref;
    cln->data = tbl;

    ctx->service = lcf->service;
    ctx->table = tbl;
    ctx->key = lcf->key->value;
    ctx->a = a;
    ngx_http_set_ctx(r, ctx, ngx_http_ringman_module);

    /* A copy: the table may be swapped before proxy_pass reads it. */
    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(p, backend, len);

    v = &r->variables[lcf->index];
    v->data = p;
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
    u_char                       *p;
    size_t                        len, size;
    ngx_int_t                     rc;
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

    tbl = ngx_http_ringman_fresh(r, lcf->cand_service);
    if (tbl == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    if (ngx_http_ringman_answer(r, tbl, lcf->cand_key, lcf->cand_unescape, &a)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

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


static ngx_int_t
ngx_http_ringman_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us)
{
    uint32_t                       i;
    ringman_answer_t               a;
    ngx_pool_cleanup_t            *cln;
    ngx_http_ringman_ctx_t        *ctx;
    ngx_http_ringman_peer_t       *peer;
    ngx_http_ringman_table_t      *tbl;
    ngx_http_ringman_srv_conf_t   *scf;
    ngx_http_ringman_peer_data_t  *pd;

    scf = ngx_http_conf_upstream_srv_conf(us, ngx_http_ringman_module);

    pd = ngx_pcalloc(r->pool, sizeof(ngx_http_ringman_peer_data_t));
    if (pd == NULL) {
        return NGX_ERROR;
    }

    pd->factor = scf->factor;

    r->upstream->peer.data = pd;
    r->upstream->peer.get = ngx_http_ringman_get_peer;
    r->upstream->peer.free = ngx_http_ringman_free_peer;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ringman_module);

    if (ctx != NULL && ctx->service == scf->service
        && ctx->key.len == scf->key->value.len
        && ngx_strncmp(ctx->key.data, scf->key->value.data, ctx->key.len) == 0)
    {
        tbl = ctx->table;
        a = ctx->a;

    } else {
        tbl = ngx_http_ringman_fresh(r, scf->service);

        if (tbl != NULL
            && ngx_http_ringman_answer(r, tbl, scf->key, 0, &a) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (tbl != NULL) {

        if (a.kind == RINGMAN_OVERRIDE) {
            peer = &tbl->overrides[a.slot];

            if (peer->sockaddr) {
                pd->peers[pd->n++] = peer;
            }

        } else if (a.kind == RINGMAN_ROW) {
            for (i = 0; i < tbl->t.width; i++) {
                peer = &tbl->instances[ringman_table_candidate(&tbl->t,
                                                                 a.row, i)];
                if (peer->sockaddr) {
                    pd->peers[pd->n++] = peer;
                }
            }

        } else {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "ringman: no route in service \"%V\"",
                          &scf->service->name);
        }
    }

    if (pd->n > 0) {
        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_ERROR;
        }

        tbl->refs++;
        pd->table = tbl;
        cln->handler = ngx_http_ringman_unref;
        cln->data = tbl;
    }

    /* One try per candidate: proxy_next_upstream moves down the row. */
    r->upstream->peer.tries = pd->n ? pd->n : 1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ringman_get_peer(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_ringman_peer_data_t  *pd = data;

    ngx_uint_t                 i, pick, n, cap;
    ngx_http_ringman_peer_t   *peer;

    if (pd->tried >= pd->n) {
        pc->tries = 0;
        return NGX_BUSY;   /* no candidate (left): 502 */
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

            peer = pd->peers[i];

            if (peer->inflight == NULL || *peer->inflight < cap) {
                pick = i;
                break;
            }
        }
    }

    pd->used |= (ngx_uint_t) 1 << pick;
    pd->tried++;

    peer = pd->peers[pick];

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
    ngx_http_ringman_peer_data_t  *pd = data;

    if (pd->current) {
        (void) ngx_atomic_fetch_add(pd->current->inflight, -1);
        (void) ngx_atomic_fetch_add(pd->table->inflight, -1);
        pd->current = NULL;
    }

    if (pc->tries) {
        pc->tries--;
    }
}
