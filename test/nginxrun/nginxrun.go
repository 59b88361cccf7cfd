// Package nginxrun runs Debian's real nginx, unprivileged, with one of the
// repository's configs (nginx/<name>.conf) or a config of the caller's own.
//
// It exists because two places need exactly the same machinery: the nginx
// integration tests (test/nginx) and the nginx section of the benchmark
// (test/bench). Both find the nginx binary and its Lua module, fill a
// config's @PLACEHOLDERS@, lay out a prefix directory with lua/ringman.lua,
// start nginx in its own process group on a free port, wait until it
// accepts connections, stop it (a worker of a killed master keeps serving,
// so the whole group is killed) and read its logs. It does not depend on
// package testing: errors are returned, and the callers decide whether they
// mean a skip, a failure or a message to the operator.
package nginxrun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"ringman/test/cluster"
)

const (
	// ModulesDir holds Debian's dynamic nginx modules (ndk, lua).
	ModulesDir = "/usr/lib/nginx/modules"
	// DefaultReadyTimeout bounds nginx's start when Config.ReadyTimeout is
	// 0; it is ready in ~50 ms on an idle machine.
	DefaultReadyTimeout = 10 * time.Second
	// DefaultQuitWait is how long Stop waits after SIGQUIT before killing
	// the process group when Config.QuitWait is 0.
	DefaultQuitWait = 5 * time.Second
	// DefaultLogTail is how much of each log Logs returns when
	// Config.LogTail is 0.
	DefaultLogTail = 16 << 10
)

// LuaModules are the dynamic modules in ModulesDir the Lua configs load.
var LuaModules = []string{"ndk_http_module.so", "ngx_http_lua_module.so"}

// ErrNoNginx is returned by Binary when nginx is not installed.
var ErrNoNginx = errors.New("nginx is not installed")

// Binary returns the nginx binary: Debian installs it in /usr/sbin, which
// is not in every user's PATH.
func Binary() (string, error) {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx", nil
	}
	return "", ErrNoNginx
}

// MissingLuaModule returns the first of LuaModules missing from
// ModulesDir, or "" when nginx's Lua module is installed.
func MissingLuaModule() string {
	for _, m := range LuaModules {
		if _, err := os.Stat(filepath.Join(ModulesDir, m)); err != nil {
			return m
		}
	}
	return ""
}

// ConfigDir returns the repository's nginx/ directory.
func ConfigDir() (string, error) {
	root, err := cluster.ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "nginx"), nil
}

// ReadConfig returns the text of nginx/<name>, placeholders unfilled.
func ReadConfig(name string) (string, error) {
	dir, err := ConfigDir()
	if err != nil {
		return "", err
	}
	raw, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return "", err
	}
	return string(raw), nil
}

var placeholder = regexp.MustCompile(`@[A-Z_]+@`)

// Render returns conf with its @PLACEHOLDERS@ replaced from vars; it fails
// when one is left outside a comment (the headers document them).
func Render(conf string, vars map[string]string) (string, error) {
	out := placeholder.ReplaceAllStringFunc(conf, func(m string) string {
		if v, ok := vars[m[1:len(m)-1]]; ok {
			return v
		}
		return m
	})
	for _, line := range strings.Split(out, "\n") {
		if code, _, _ := strings.Cut(line, "#"); placeholder.MatchString(code) {
			return "", fmt.Errorf("placeholder left after substitution: %q", strings.TrimSpace(line))
		}
	}
	return out, nil
}

// Config describes one nginx to start.
type Config struct {
	Bin  string            // nginx binary, from Binary
	Dir  string            // prefix directory; created when missing
	Conf string            // nginx.conf text with @PLACEHOLDERS@ (ReadConfig)
	Vars map[string]string // placeholder values; LISTEN is set by Start

	ReadyTimeout time.Duration // 0: DefaultReadyTimeout
	QuitWait     time.Duration // 0: DefaultQuitWait
	LogTail      int           // bytes of each log in Logs; 0: DefaultLogTail

	// Preload is LD_PRELOAD for nginx ("" none), e.g. libasan.so for a
	// module built with -fsanitize=address (see Env).
	Preload string
	// SanitizerDir receives the sanitizers' reports when Preload is set
	// (see Env); "" puts them in Dir/sanitizer.
	SanitizerDir string
}

// Environment variables that make callers run nginx with an instrumented
// module: the module's path, and what nginx must preload for it.
const (
	EnvModule  = "RINGMAN_NGINX_MODULE"
	EnvPreload = "RINGMAN_NGINX_PRELOAD"
)

// Env returns the environment for an nginx started with preload in
// LD_PRELOAD (nil when preload is ""): Debian's nginx is not built with
// AddressSanitizer, so libasan must be loaded before anything else for a
// module built with -fsanitize=address to load at all.
//
// The sanitizers write each report to a file in sanitizerDir (asan.PID,
// ubsan.PID; see SanitizerReports), which nginx's workers must be able to
// write: run as root, they run as nobody. A report stops the process
// (halt_on_error): nginx's master starts a new worker, and the report file
// stays for the caller to find. Leaks are not reported: nginx frees its
// pools at exit only in part, by design. ASAN_OPTIONS and UBSAN_OPTIONS
// from the environment come after these, so they may override any but
// log_path.
func Env(preload, sanitizerDir string) []string {
	if preload == "" {
		return nil
	}
	asan := "detect_leaks=0:halt_on_error=1:abort_on_error=0:detect_odr_violation=0"
	ubsan := "print_stacktrace=1:halt_on_error=1"
	if v := os.Getenv("ASAN_OPTIONS"); v != "" {
		asan += ":" + v
	}
	if v := os.Getenv("UBSAN_OPTIONS"); v != "" {
		ubsan += ":" + v
	}
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS":
		default:
			env = append(env, kv)
		}
	}
	return append(env,
		"LD_PRELOAD="+preload,
		"ASAN_OPTIONS="+asan+":log_path="+filepath.Join(sanitizerDir, "asan"),
		"UBSAN_OPTIONS="+ubsan+":log_path="+filepath.Join(sanitizerDir, "ubsan"))
}

// SanitizerReports returns the text of every report file in dir (see
// Env), "" when there is none.
func SanitizerReports(dir string) (string, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*san.*"))
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, n := range names {
		raw, err := os.ReadFile(n)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "--- %s ---\n%s\n", n, raw)
	}
	return b.String(), nil
}

// Nginx is one unprivileged nginx master (and its workers) in its own
// process group, run from its own prefix directory.
type Nginx struct {
	Addr string // 127.0.0.1:port it listens on
	Dir  string // prefix directory

	cfg  Config
	cmd  *exec.Cmd
	done chan struct{}
}

// Start lays out cfg.Dir (nginx.conf rendered with LISTEN on a free port,
// lua/ringman.lua copied from nginx/, logs/, tmp/) and starts nginx from it,
// returning once it accepts connections. A port taken in the meantime is
// retried with another one. The caller must Stop the returned Nginx.
func Start(ctx context.Context, cfg Config) (*Nginx, error) {
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.QuitWait == 0 {
		cfg.QuitWait = DefaultQuitWait
	}
	if cfg.LogTail == 0 {
		cfg.LogTail = DefaultLogTail
	}
	if cfg.Preload != "" && cfg.SanitizerDir == "" {
		cfg.SanitizerDir = filepath.Join(cfg.Dir, "sanitizer")
		if err := os.MkdirAll(cfg.SanitizerDir, 0o777); err != nil {
			return nil, err
		}
		if err := os.Chmod(cfg.SanitizerDir, 0o777); err != nil { // past the umask
			return nil, err
		}
	}
	for _, d := range []string{"lua", "logs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	lua, err := ReadConfig("ringman.lua")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(cfg.Dir, "lua", "ringman.lua"), []byte(lua), 0o644); err != nil {
		return nil, err
	}
	var lastErr error
	for range 3 {
		port, err := cluster.FreePort()
		if err != nil {
			return nil, err
		}
		v := map[string]string{"LISTEN": fmt.Sprintf("127.0.0.1:%d", port)}
		for k, val := range cfg.Vars {
			v[k] = val
		}
		out, err := Render(cfg.Conf, v)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(cfg.Dir, "nginx.conf"), []byte(out), 0o644); err != nil {
			return nil, err
		}
		p := &Nginx{Addr: v["LISTEN"], Dir: cfg.Dir, cfg: cfg}
		if lastErr = p.start(ctx); lastErr == nil {
			return p, nil
		}
		if !strings.Contains(lastErr.Error(), "Address already in use") {
			break
		}
	}
	return nil, lastErr
}

func (p *Nginx) start(ctx context.Context) error {
	out, err := os.Create(filepath.Join(p.Dir, "logs", "stderr.log"))
	if err != nil {
		return err
	}
	defer out.Close()
	p.cmd = exec.Command(p.cfg.Bin, "-p", p.Dir+"/", "-c", filepath.Join(p.Dir, "nginx.conf"), "-e", "stderr", "-g", "daemon off;")
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.Env = Env(p.cfg.Preload, p.cfg.SanitizerDir)
	p.cmd.SysProcAttr = cluster.SysProcAttr() // own process group, killed with its parent
	if err := p.cmd.Start(); err != nil {
		return err
	}
	p.done = make(chan struct{})
	go func() { p.cmd.Wait(); close(p.done) }()
	sctx, cancel := context.WithTimeout(ctx, p.cfg.ReadyTimeout)
	defer cancel()
	exited := false
	err = cluster.Poll(sctx, 10*time.Millisecond, "nginx accepts connections on "+p.Addr, func() (bool, string) {
		select {
		case <-p.done:
			exited = true
			return true, ""
		default:
		}
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
	if exited {
		return fmt.Errorf("nginx exited at start (%s):\n%s", p.cmd.ProcessState, p.Logs())
	}
	if err != nil {
		p.Stop()
		return fmt.Errorf("%w\n%s", err, p.Logs())
	}
	return nil
}

// Stop asks nginx to finish gracefully (SIGQUIT) and kills its whole
// process group when the master is not gone in time. The group is killed in
// any case: a worker whose master was SIGKILLed keeps serving the port.
// Safe to call more than once.
func (p *Nginx) Stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.done:
	default:
		p.cmd.Process.Signal(syscall.SIGQUIT)
		t := time.NewTimer(p.cfg.QuitWait)
		select {
		case <-p.done:
		case <-t.C:
		}
		t.Stop()
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Logs returns the end of nginx's stderr and of its error log.
func (p *Nginx) Logs() string {
	var b strings.Builder
	for _, f := range []string{"stderr.log", "error.log"} {
		raw, _ := os.ReadFile(filepath.Join(p.Dir, "logs", f))
		if len(raw) > p.cfg.LogTail {
			raw = raw[len(raw)-p.cfg.LogTail:]
		}
		fmt.Fprintf(&b, "--- nginx %s ---\n%s\n", f, raw)
	}
	return b.String()
}

// SanitizerReports returns the sanitizers' reports so far (see Env): ""
// when there is none, or when nginx runs without Config.Preload.
func (p *Nginx) SanitizerReports() (string, error) {
	if p.cfg.Preload == "" {
		return "", nil
	}
	return SanitizerReports(p.cfg.SanitizerDir)
}

// ErrorLog returns nginx's whole error log.
func (p *Nginx) ErrorLog() string {
	raw, _ := os.ReadFile(filepath.Join(p.Dir, "logs", "error.log"))
	return string(raw)
}

// Reload renders conf (placeholders from vars, LISTEN kept) over nginx.conf
// and sends the master SIGHUP, as `nginx -s reload` does: new workers start
// with the new config and the old ones finish their requests. It returns
// once the signal is sent; poll for what the new config changes.
func (p *Nginx) Reload(conf string, vars map[string]string) error {
	v := map[string]string{"LISTEN": p.Addr}
	for k, val := range vars {
		v[k] = val
	}
	out, err := Render(conf, v)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(p.Dir, "nginx.conf"), []byte(out), 0o644); err != nil {
		return err
	}
	if p.cmd == nil || p.cmd.Process == nil {
		return errors.New("nginx is not running")
	}
	return p.cmd.Process.Signal(syscall.SIGHUP)
}
