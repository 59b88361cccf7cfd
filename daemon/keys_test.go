package daemon

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"ringman/store"
)

// memStore is a store.Store in a temporary dir.
func memStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestStartKeys: how the saved keyring and --encrypt (Config.EncryptKey) combine at start.
func TestStartKeys(t *testing.T) {
	k := func(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
	ids := func(keys [][]byte) string {
		var s []string
		for _, key := range keys {
			s = append(s, fmt.Sprint(key[0]))
		}
		return strings.Join(s, ",")
	}
	for _, tc := range []struct {
		name    string
		saves   [][][]byte // keyrings saved before, in order
		flag    []byte
		keys    string // key ids, primary first
		source  string
		warning string
	}{
		{"no key", nil, nil, "", "", ""},
		{"first start with --encrypt", nil, k(1), "1", "--encrypt", ""},
		{"restart without --encrypt", [][][]byte{{k(1)}}, nil, "1", "the data file", ""},
		{"rotated, flag still the old key", [][][]byte{{k(1)}, {k(1), k(2)}, {k(2), k(1)}}, k(1), "2,1", "the data file", ""},
		{"rotated and removed, stale flag", [][][]byte{{k(1)}, {k(2), k(1)}, {k(2)}}, k(1), "2", "the data file", "removed in a key rotation: ignored"},
		{"missed a rotation, given the new key", [][][]byte{{k(1)}}, k(3), "3,1", "--encrypt and the data file", "it is now the primary key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := memStore(t)
			for _, s := range tc.saves {
				if err := st.SaveKeys(s); err != nil {
					t.Fatal(err)
				}
			}
			keys, source, warning, err := startKeys(st, tc.flag)
			if err != nil || ids(keys) != tc.keys || source != tc.source ||
				(tc.warning == "") != (warning == "") || !strings.Contains(warning, tc.warning) {
				t.Fatalf("startKeys = %s, %q, %q, %v; want %s, %q, a warning with %q", ids(keys), source, warning, err, tc.keys, tc.source, tc.warning)
			}
			saved, err := st.LoadKeys()
			if err != nil || ids(saved) != tc.keys {
				t.Errorf("saved keyring %s, %v; want %s", ids(saved), err, tc.keys)
			}
		})
	}
}
