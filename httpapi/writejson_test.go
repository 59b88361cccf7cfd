package httpapi

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A value that cannot be encoded is a 500 with a JSON error, never the
// intended status with an empty or truncated body.
func TestWriteJSONEncodeFailure(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    any
	}{
		{"year 10000", map[string]any{"updated_at": time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{"NaN", []float64{1, math.NaN()}},
		{"channel", struct{ C chan int }{make(chan int)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			writeJSON(rec, http.StatusCreated, tc.v)
			if rec.Code != http.StatusInternalServerError {
				t.Errorf("status %d, want 500", rec.Code)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var e Error
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || !strings.Contains(e.Error, "encode") {
				t.Errorf("body %q (%v); want a JSON error about encoding", rec.Body, err)
			}
		})
	}
	rec := httptest.NewRecorder()
	writeJSON(rec, http.StatusCreated, Status{Status: "ok"})
	if rec.Code != http.StatusCreated || !strings.Contains(rec.Body.String(), `"status": "ok"`) {
		t.Errorf("a good value: %d %q", rec.Code, rec.Body)
	}
}
