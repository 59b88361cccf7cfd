package nginx

import (
	"context"
	"strings"
	"testing"

	"ringman/test/nginxrun"
)

// ringman refuses a count of candidates outside 1..8, so ringman.lua
// refuses one when it is configured: nginx does not start with it, rather
// than answering 503 to every request in "lookup" mode. (nginx -t does not
// run init_by_lua, so this starts nginx.)
func TestLuaCandidatesRule(t *testing.T) {
	bin := nginxBin(t, true)
	raw, err := nginxrun.ReadConfig("lua.conf")
	if err != nil {
		t.Fatal(err)
	}
	const setting = "candidates = 3,"
	if !strings.Contains(raw, setting) {
		t.Fatalf("lua.conf has no %q", setting)
	}
	for _, tc := range []struct {
		candidates string
		ok         bool
	}{{"8", true}, {"0", false}, {"9", false}, {"2.5", false}, {`"3"`, false}} {
		t.Run(tc.candidates, func(t *testing.T) {
			p, err := nginxrun.Start(context.Background(), nginxrun.Config{
				Bin:          bin,
				Dir:          t.TempDir(),
				Conf:         strings.Replace(raw, setting, "candidates = "+tc.candidates+",", 1),
				Vars:         map[string]string{"RINGMAN_RESP": "127.0.0.1:6380", "MODULES": modulesDir},
				ReadyTimeout: nginxReady,
				QuitWait:     nginxQuit,
			})
			if err == nil {
				p.Stop()
			}
			switch {
			case tc.ok && err != nil:
				t.Errorf("candidates = %s: %v", tc.candidates, err)
			case !tc.ok && err == nil:
				t.Errorf("candidates = %s: nginx started", tc.candidates)
			case !tc.ok && !strings.Contains(err.Error(), "candidates must be a whole number from 1 to 8"):
				t.Errorf("candidates = %s: %v\nwant the rule", tc.candidates, err)
			}
		})
	}
}
