package cluster

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"ringman/tablefile"
)

// WaitTableFile polls service's table file in dir (`ringman serve
// --table-dir dir`) until it decodes and has the epoch that RING.TABLE
// reports on the node rdb talks to: the file then answers what that node
// answers. For the tests of nginx's native module, which read the file.
func WaitTableFile(ctx context.Context, rdb *redis.Client, dir, service string) (*tablefile.Table, error) {
	var tb *tablefile.Table
	err := Poll(ctx, 20*time.Millisecond, fmt.Sprintf("table file of %s current", service), func() (bool, string) {
		reply, err := rdb.Do(ctx, "RING.TABLE", service).Slice()
		if err != nil {
			return false, "RING.TABLE: " + err.Error()
		}
		if len(reply) != 8 {
			return false, fmt.Sprintf("RING.TABLE: %d elements, want 8", len(reply))
		}
		buf, err := os.ReadFile(tablefile.Path(dir, service))
		if err != nil {
			return false, err.Error()
		}
		if tb, err = tablefile.Decode(buf); err != nil {
			return false, err.Error()
		}
		if got := fmt.Sprintf("%016x", tb.Epoch); got != reply[1] {
			return false, fmt.Sprintf("file epoch %s, RING.TABLE's %v", got, reply[1])
		}
		return true, ""
	})
	if err != nil {
		return nil, err
	}
	return tb, nil
}
