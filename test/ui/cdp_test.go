//go:build linux

package ui

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A minimal Chrome DevTools Protocol client over --remote-debugging-pipe:
// Chromium reads NUL-terminated JSON messages on its fd 3 and writes them on
// its fd 4, so no websocket is needed. Pages are flattened sessions
// (Target.attachToTarget {flatten: true}): every message names its session.

// callTimeout bounds every call whose context has no earlier deadline.
const callTimeout = 20 * time.Second

type cdpError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// request is what the client sends.
type request struct {
	ID        int64  `json:"id"`
	SessionID string `json:"sessionId,omitempty"`
	Method    string `json:"method"`
	Params    any    `json:"params,omitempty"`
}

// incoming is what Chromium sends: answers (ID) and events (Method).
type incoming struct {
	ID        int64           `json:"id"`
	SessionID string          `json:"sessionId"`
	Method    string          `json:"method"`
	Params    json.RawMessage `json:"params"`
	Result    json.RawMessage `json:"result"`
	Error     *cdpError       `json:"error"`
}

// browser is one headless Chromium process in its own process group.
type browser struct {
	cmd                  *exec.Cmd
	toChrome, fromChrome *os.File
	logPath              string
	exited               chan struct{} // closed once cmd has been waited for

	writeMu sync.Mutex
	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan incoming
	broken  error               // why the pipe is unusable; set once
	errs    map[string][]string // JavaScript errors and console errors, by session
}

// startBrowser starts Chromium with a fresh profile under dir.
func startBrowser(path, dir string) (*browser, error) {
	chromeIn, toChrome, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	fromChrome, chromeOut, err := os.Pipe()
	if err != nil {
		chromeIn.Close()
		toChrome.Close()
		return nil, err
	}
	b := &browser{toChrome: toChrome, fromChrome: fromChrome, logPath: filepath.Join(dir, "chromium.log"),
		exited: make(chan struct{}), pending: map[int64]chan incoming{}, errs: map[string][]string{}}
	logf, err := os.Create(b.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	b.cmd = exec.Command(path, "--headless=new", "--remote-debugging-pipe",
		// Flags this machine needs (/work/.library/env/machines/go.md): no
		// sandbox as root, and nothing that reaches out to a closed network.
		"--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--hide-scrollbars", "--user-data-dir="+filepath.Join(dir, "profile"),
		"about:blank")
	b.cmd.ExtraFiles = []*os.File{chromeIn, chromeOut} // its fd 3 and fd 4
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = b.cmd.Start()
	chromeIn.Close() // Chromium has its own copies
	chromeOut.Close()
	if err != nil {
		toChrome.Close()
		fromChrome.Close()
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	go func() { b.cmd.Wait(); close(b.exited) }()
	go b.read()
	return b, nil
}

// read dispatches Chromium's messages until the pipe closes.
func (b *browser) read() {
	r := bufio.NewReader(b.fromChrome)
	var err error
	for {
		var raw []byte
		if raw, err = r.ReadBytes(0); err != nil {
			break
		}
		var m incoming
		if err = json.Unmarshal(raw[:len(raw)-1], &m); err != nil {
			err = fmt.Errorf("undecodable message from Chromium: %w", err)
			break
		}
		b.mu.Lock()
		if ch, ok := b.pending[m.ID]; ok && m.ID != 0 {
			delete(b.pending, m.ID)
			ch <- m
		} else if why := pageError(m); why != "" {
			b.errs[m.SessionID] = append(b.errs[m.SessionID], why)
		}
		b.mu.Unlock()
	}
	if errors.Is(err, io.EOF) {
		err = errors.New("Chromium closed the DevTools pipe")
	}
	b.mu.Lock()
	b.broken = err
	for id, ch := range b.pending {
		delete(b.pending, id)
		close(ch)
	}
	b.mu.Unlock()
}

// pageError describes an event that reports a JavaScript error, a console
// error or a failed load in a page; "" for every other message.
func pageError(m incoming) string {
	switch m.Method {
	case "Runtime.exceptionThrown":
		var p struct {
			ExceptionDetails struct {
				Text      string `json:"text"`
				Exception struct {
					Description string `json:"description"`
				} `json:"exception"`
			} `json:"exceptionDetails"`
		}
		json.Unmarshal(m.Params, &p)
		return "exception: " + p.ExceptionDetails.Text + " " + p.ExceptionDetails.Exception.Description
	case "Log.entryAdded":
		var p struct {
			Entry struct{ Level, Text, URL string } `json:"entry"`
		}
		json.Unmarshal(m.Params, &p)
		if p.Entry.Level == "error" {
			return "console: " + p.Entry.Text + " " + p.Entry.URL
		}
	}
	return ""
}

// call sends method to the browser (session "") or a page's session and
// decodes the answer into result (which may be nil).
func (b *browser) call(ctx context.Context, session, method string, params, result any) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	ch := make(chan incoming, 1)
	b.mu.Lock()
	if b.broken != nil {
		b.mu.Unlock()
		return fmt.Errorf("%s: %w", method, b.broken)
	}
	b.nextID++
	id := b.nextID
	b.pending[id] = ch
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.pending, id)
		b.mu.Unlock()
	}()
	msg, err := json.Marshal(request{ID: id, SessionID: session, Method: method, Params: params})
	if err != nil {
		return err
	}
	b.writeMu.Lock()
	deadline, _ := ctx.Deadline()
	b.toChrome.SetWriteDeadline(deadline)
	_, err = b.toChrome.Write(append(msg, 0))
	b.writeMu.Unlock()
	if err != nil {
		return fmt.Errorf("%s: write to Chromium: %w", method, err)
	}
	select {
	case m, ok := <-ch:
		switch {
		case !ok:
			return fmt.Errorf("%s: no answer: %v", method, b.brokenErr())
		case m.Error != nil:
			return fmt.Errorf("%s: %s (code %d)", method, m.Error.Message, m.Error.Code)
		case result != nil:
			return json.Unmarshal(m.Result, result)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: no answer: %w", method, ctx.Err())
	}
}

func (b *browser) brokenErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.broken
}

// close asks Chromium to quit, then kills its whole process group whatever
// happened, and waits for it: no renderer or helper outlives the test.
func (b *browser) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if b.call(ctx, "", "Browser.close", nil, nil) == nil {
		select {
		case <-b.exited:
		case <-ctx.Done():
		}
	}
	syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-b.exited:
	case <-time.After(10 * time.Second):
	}
	b.toChrome.Close()
	b.fromChrome.Close()
}

// logTail is the end of Chromium's own output, for failure reports.
func (b *browser) logTail() string {
	raw, _ := os.ReadFile(b.logPath)
	if len(raw) > 4096 {
		raw = raw[len(raw)-4096:]
	}
	return string(raw)
}

// page is one tab, attached as a flattened session.
type page struct {
	b       *browser
	session string
}

// newPage opens a blank tab of width×height CSS pixels and enables the
// events that report page errors.
func (b *browser) newPage(ctx context.Context, width, height int) (*page, error) {
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := b.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		return nil, err
	}
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached); err != nil {
		return nil, err
	}
	p := &page{b: b, session: attached.SessionID}
	for _, m := range []string{"Page.enable", "Runtime.enable", "Log.enable"} {
		if err := p.call(ctx, m, nil, nil); err != nil {
			return nil, err
		}
	}
	metrics := map[string]any{"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}
	return p, p.call(ctx, "Emulation.setDeviceMetricsOverride", metrics, nil)
}

func (p *page) call(ctx context.Context, method string, params, result any) error {
	return p.b.call(ctx, p.session, method, params, result)
}

// navigate loads url; it returns once the navigation is committed, not
// loaded: callers poll the DOM for what they wait for.
func (p *page) navigate(ctx context.Context, url string) error {
	var res struct {
		ErrorText string `json:"errorText"`
	}
	if err := p.call(ctx, "Page.navigate", map[string]any{"url": url}, &res); err != nil {
		return err
	}
	if res.ErrorText != "" {
		return fmt.Errorf("navigate to %s: %s", url, res.ErrorText)
	}
	return nil
}

// eval evaluates a JavaScript expression in the page (awaiting a promise)
// and decodes its value, passed back as JSON, into out.
func (p *page) eval(ctx context.Context, expr string, out any) error {
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	params := map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}
	if err := p.call(ctx, "Runtime.evaluate", params, &res); err != nil {
		return err
	}
	if e := res.ExceptionDetails; e != nil {
		return fmt.Errorf("evaluate %.60q: %s %s", expr, e.Text, e.Exception.Description)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(res.Result.Value, out)
}

// screenshot saves the whole page (not only the viewport) as a PNG file.
func (p *page) screenshot(ctx context.Context, path string) error {
	var layout struct {
		Content struct{ Width, Height float64 } `json:"cssContentSize"`
	}
	if err := p.call(ctx, "Page.getLayoutMetrics", nil, &layout); err != nil {
		return err
	}
	var shot struct {
		Data string `json:"data"`
	}
	params := map[string]any{"format": "png", "captureBeyondViewport": true,
		"clip": map[string]any{"x": 0, "y": 0, "width": layout.Content.Width, "height": layout.Content.Height, "scale": 1}}
	if err := p.call(ctx, "Page.captureScreenshot", params, &shot); err != nil {
		return err
	}
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		return fmt.Errorf("screenshot: %w", err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		return errors.New("screenshot: the data is not a PNG")
	}
	return os.WriteFile(path, png, 0o644)
}

// errors returns the page's JavaScript and console errors so far.
func (p *page) errors() string {
	p.b.mu.Lock()
	defer p.b.mu.Unlock()
	return strings.Join(p.b.errs[p.session], "\n")
}
