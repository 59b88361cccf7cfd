package nginx

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ringman/httpapi"
	"ringman/test/nginxrun"
)

// Every config in nginx/ passes `nginx -t` once its placeholders are
// filled; redis_eval.conf only where its two (unpackaged) modules exist.
func TestConfigsSyntax(t *testing.T) {
	bin := nginxBin(t, false)
	vars := map[string]string{
		"LISTEN":       "127.0.0.1:18080",
		"RINGMAN_RESP": "127.0.0.1:6380",
		"RINGMAN_HTTP": "127.0.0.1:7380",
		"DOMAIN":       "example.com",
		"MODULES":      modulesDir,
		// nginx -t checks the directory's path, not its files.
		"RINGMAN_TABLES": "/run/ringman",
	}
	for _, conf := range []string{"lua.conf", "auth_request.conf", "api_domain.conf", "redis_eval.conf", "module.conf", "static_then_ring.conf"} {
		t.Run(conf, func(t *testing.T) {
			switch conf {
			case "lua.conf":
				nginxBin(t, true)
			case "module.conf", "static_then_ring.conf":
				vars["MODULE"] = moduleSO(t)
			case "redis_eval.conf":
				for _, m := range []string{"ngx_http_redis_module.so", "ngx_http_eval_module.so"} {
					if _, err := os.Stat(filepath.Join(modulesDir, m)); err != nil {
						t.Skipf("%s needs %s, which Debian does not package (nginx built with ngx_http_redis and nginx-eval)", conf, m)
					}
				}
			}
			dir := t.TempDir()
			for _, d := range []string{"lua", "logs", "tmp"} {
				os.MkdirAll(filepath.Join(dir, d), 0o755)
			}
			path := filepath.Join(dir, "nginx.conf")
			if err := os.WriteFile(path, renderConfig(t, conf, vars), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "-t", "-q", "-p", dir+"/", "-c", path, "-e", "stderr")
			if strings.HasPrefix(conf, "module") || strings.HasPrefix(conf, "static") {
				// A module built with -fsanitize loads only after libasan.
				preload, sanDir := sanitizers(t)
				cmd.Env = nginxrun.Env(preload, sanDir)
			}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("nginx -t %s: %v\n%s", conf, err, out)
			}
		})
	}
}

// nginx/api_domain.conf: api.<domain> reaches ringman's HTTP API, reads and
// writes; other hosts do not.
func TestAPIDomain(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	nginxBin(t, false)
	f := newFixture(t, ctx, "", 1)
	ng := startNginx(t, "api_domain.conf", map[string]string{
		"DOMAIN":       "example.test",
		"RINGMAN_HTTP": f.nodes[0].HTTPAddr,
	})
	do := func(method, host, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, "http://"+ng.Addr+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := f.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}

	code, body := do("GET", "api.example.test", "/v1/members", "")
	var members []httpapi.Member
	if code != 200 || json.Unmarshal([]byte(body), &members) != nil || len(members) != 1 || members[0].Name != "n1" {
		t.Errorf("GET api.example.test/v1/members = %d %s", code, body)
	}
	code, body = do("POST", "api.example.test", "/entries.json", `{"host":"beta.example.test","backend":"10.0.0.9:3000"}`)
	if code != http.StatusCreated {
		t.Fatalf("POST api.example.test/entries.json = %d %s", code, body)
	}
	if e, err := f.nodes[0].API().Host(ctx, "beta.example.test"); err != nil || e.Backend != "10.0.0.9:3000" {
		t.Errorf("override set through nginx, read from the node: %+v %v", e, err)
	}
	code, body = do("GET", "api.example.test", "/entries/beta.example.test.json", "")
	if code != 200 || !strings.Contains(body, "10.0.0.9:3000") {
		t.Errorf("GET api.example.test/entries/beta.example.test.json = %d %s", code, body)
	}
	for _, other := range []string{"www.example.test", "api.other.test", "example.test"} {
		if code, body := do("GET", other, "/v1/members", ""); code != http.StatusNotFound || strings.Contains(body, "n1") {
			t.Errorf("Host %s reached the API: %d %s", other, code, body)
		}
	}
}
