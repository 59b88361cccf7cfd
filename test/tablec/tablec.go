// Package tablec runs nginx's C table reader (nginx/module/ringman_table.c)
// from Go, so that its tests and fuzz targets can hold it against package
// tablefile, the Go encoder and decoder of the same files: the module and
// ringman must accept the same files and answer every key the same way.
//
// ringman_table.c is a symbolic link to the module's file, so that the go
// tool compiles it (and rebuilds when it changes).
//
// It builds with cgo and needs xxhash.h (apt-get install libxxhash-dev, or
// `make deps-nginx-dev`).
package tablec

/*
#cgo CFLAGS: -I${SRCDIR}/../../nginx/module -O2 -Wall -Werror
#include <stdlib.h>
#include "ringman_table.h"
*/
import "C"

import (
	"errors"
	"unsafe"
)

// Table is a file opened by the C reader. Its bytes and state live in C
// memory (the C struct points into the bytes); Close frees them.
type Table struct {
	t   *C.ringman_table_t
	buf unsafe.Pointer
}

// Open checks buf with ringman_table_open; the error is its reason.
func Open(buf []byte) (*Table, error) {
	t := &Table{t: (*C.ringman_table_t)(C.calloc(1, C.sizeof_ringman_table_t))}
	// Exactly len(buf) bytes, so that -asan catches a read past the end.
	t.buf = C.malloc(C.size_t(max(len(buf), 1)))
	copy(unsafe.Slice((*byte)(t.buf), len(buf)), buf)
	var errBuf [160]C.char
	if C.ringman_table_open(t.t, t.buf, C.size_t(len(buf)), &errBuf[0], C.size_t(len(errBuf))) != 0 {
		t.Close()
		return nil, errors.New(C.GoString(&errBuf[0]))
	}
	return t, nil
}

// Close frees the table.
func (t *Table) Close() {
	C.free(unsafe.Pointer(t.t))
	C.free(t.buf)
}

// Lookup answers key with ringman_table_lookup: "override" and its backend,
// "ring" and the key's whole row (owner first), or "none".
func (t *Table) Lookup(key []byte) (string, []string) {
	var a C.ringman_answer_t
	var p *C.uchar
	if len(key) > 0 {
		k := C.CBytes(key)
		defer C.free(k)
		p = (*C.uchar)(k)
	}
	C.ringman_table_lookup(t.t, p, C.size_t(len(key)), &a)
	switch a.kind {
	case C.RINGMAN_OVERRIDE:
		return "override", []string{C.GoStringN((*C.char)(unsafe.Pointer(a.backend)), C.int(a.backend_len))}
	case C.RINGMAN_ROW:
		out := make([]string, t.t.width)
		for i := range out {
			var n C.size_t
			s := C.ringman_table_instance(t.t, C.ringman_table_candidate(t.t, a.row, C.uint32_t(i)), &n)
			out[i] = C.GoStringN((*C.char)(unsafe.Pointer(s)), C.int(n))
		}
		return "ring", out
	}
	return "none", nil
}
