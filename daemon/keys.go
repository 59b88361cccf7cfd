package daemon

import (
	"bytes"
	"fmt"
	"slices"
)

// keyringStore is the part of store.Store that keeps the gossip keyring.
type keyringStore interface {
	LoadKeys() ([][]byte, error)
	SaveKeys(keys [][]byte) error
	KeyRemoved(key []byte) (bool, error)
}

// startKeys decides the gossip keyring a node starts with, from the keyring
// saved in its data file and Config.EncryptKey (flag, nil when not given):
//
//   - nothing saved: --encrypt alone (saved at once), or no encryption;
//   - saved, and --encrypt absent or one of the saved keys: the saved
//     keyring as it is, its primary key first (a restart keeps the last
//     rotation, whatever --encrypt still says);
//   - --encrypt is a key this node removed in a rotation: ignored, with a
//     warning (a stale flag must not bring a retired key back);
//   - --encrypt is a key this node never had: it becomes the primary key
//     and the saved keys stay installed, with a warning (how a node that
//     was down during a rotation catches up).
//
// It returns the keys (primary first; nil: gossip not encrypted), where
// they came from (for the banner), and a warning for the log.
func startKeys(st keyringStore, flag []byte) (keys [][]byte, source, warning string, err error) {
	saved, err := st.LoadKeys()
	if err != nil {
		return nil, "", "", err
	}
	switch {
	case saved == nil && flag == nil:
		return nil, "", "", nil
	case saved == nil:
		keys, source = [][]byte{flag}, "--encrypt"
	case flag == nil || slices.ContainsFunc(saved, func(k []byte) bool { return bytes.Equal(k, flag) }):
		return saved, "the data file", "", nil
	default:
		removed, err := st.KeyRemoved(flag)
		if err != nil {
			return nil, "", "", err
		}
		if removed {
			return saved, "the data file", fmt.Sprintf("--encrypt is a key this node removed in a key rotation: ignored; "+
				"using the %d key(s) saved in the data file (set --encrypt to the cluster's current key)", len(saved)), nil
		}
		keys, source = append([][]byte{flag}, saved...), "--encrypt and the data file"
		warning = fmt.Sprintf("--encrypt is a key this node did not have: it is now the primary key, and the %d key(s) saved "+
			"in the data file stay installed ('ringman keys list' shows them; remove the old ones once no node uses them)", len(saved))
	}
	if err := st.SaveKeys(keys); err != nil {
		return nil, "", "", err
	}
	return keys, source, warning, nil
}
