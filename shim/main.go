// The shim is what the container runtime runs for every CNI call (installed as
// tenant-routing-wrapper). Starting the full Node program costs ~120 MB and a slow start-up per call,
// so the shim hands the call to the warm per-node agent (`tenant-routing agent`) over a unix socket
// and prints its answer. When no agent is serving, it runs the full program `tenant-routing` instead,
// with the same arguments, environment and stdin.
//
// It decides nothing: it does not validate the call or the configuration, retries nothing and sets no
// time limit once the agent has greeted it. It reads the stdin JSON only for the agent's socket
// (agentSocket) and for the cniVersion of its own two errors. Every rule lives in TypeScript, in the
// agent and in tenant-routing, so that the two paths cannot disagree.
//
// Protocol; a frame is a 4-byte big-endian length N, then N bytes of JSON:
//
//	agent -> shim  one byte 'A', written as soon as the agent accepts the connection
//	shim -> agent  frame {"v":1,"env":{every CNI_* variable},"stdin":"<base64>"}, then half-close
//	agent -> shim  frame {"v":1,"exit":0..255,"stdout":"<base64>"}
package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	program       = "tenant-routing"
	defaultSocket = "/run/tenant-routing/agent.sock"
	// A larger stdin is the agent's to report (code 6), so read one byte more than it accepts.
	maxStdin = 4<<20 + 1
	maxReply = 16 << 20
	// A unix connect succeeds as soon as the connection is queued in the listen backlog, even when
	// the agent is hung; only this byte, written after accept(), shows that it is serving.
	greeting     = 'A'
	greetingWait = 300 * time.Millisecond

	notAvailable = "neither the tenant-routing agent nor the tenant-routing executable is available"
	endedEarly   = "the tenant-routing agent ended the call before answering; the runtime should retry"
)

func main() {
	if _, ok := os.LookupEnv("CNI_COMMAND"); !ok {
		// Not a CNI call (e.g. `tenant-routing-wrapper doctor`): the full program's business.
		runProgram("1.0.0", nil, false)
	}
	stdin, err := io.ReadAll(io.LimitReader(os.Stdin, maxStdin))
	if err != nil {
		// An unreadable stdin (closed, a directory): the program meets the same error and reports it.
		runProgram("1.0.0", nil, false)
	}
	var doc map[string]json.RawMessage
	_ = json.Unmarshal(stdin, &doc) // not JSON: the defaults below; the agent or program reports it
	version := stringKey(doc, "cniVersion", "1.0.0")

	conn, err := dialAgent(stringKey(doc, "agentSocket", defaultSocket))
	if err != nil {
		fmt.Fprintf(os.Stderr, "tenant-routing shim: agent not serving (%v); running %s\n", err, program)
		runProgram(version, stdin, true)
	}
	// From here on the agent may already be applying the call: running the program as well could
	// apply it twice, so any failure is reported for the runtime to retry the whole call instead.
	exit, stdout, err := call(conn, request(stdin))
	if err != nil {
		fail(version, endedEarly, err.Error())
	}
	_, _ = os.Stdout.Write(stdout)
	os.Exit(exit)
}

// stringKey is doc's top-level string key, or otherwise when absent or not a string (null included).
func stringKey(doc map[string]json.RawMessage, key, otherwise string) string {
	var s string
	if raw := doc[key]; len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return otherwise
	}
	return s
}

// dialAgent connects and waits for the greeting; the connection and the greeting share one deadline.
func dialAgent(path string) (*net.UnixConn, error) {
	if !filepath.IsAbs(path) {
		// The config decoder refuses it (code 7); the program says so. Never a relative path, and
		// never '@', which Go would take for Linux's abstract namespace.
		return nil, fmt.Errorf("agentSocket %q is not an absolute path", path)
	}
	deadline := time.Now().Add(greetingWait)
	c, err := (&net.Dialer{Deadline: deadline}).Dial("unix", path)
	if err != nil {
		return nil, err
	}
	conn := c.(*net.UnixConn)
	b := []byte{0}
	_ = conn.SetReadDeadline(deadline) // cannot fail on an open connection
	if _, err = io.ReadFull(conn, b); err == nil && b[0] != greeting {
		err = fmt.Errorf("greeting byte %#x is not %#x", b[0], greeting)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("no greeting from %s: %w", path, err)
	}
	_ = conn.SetReadDeadline(time.Time{}) // the call is the agent's now: its time limit is not ours to set
	return conn, nil
}

func request(stdin []byte) []byte {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if name, value, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "CNI_") {
			env[name] = value
		}
	}
	// Cannot fail for these types; []byte is encoded as standard base64.
	body, _ := json.Marshal(struct {
		V     int               `json:"v"`
		Env   map[string]string `json:"env"`
		Stdin []byte            `json:"stdin"`
	}{1, env, stdin})
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func call(conn *net.UnixConn, frame []byte) (int, []byte, error) {
	defer conn.Close()
	_, err := conn.Write(frame)
	if err == nil {
		err = conn.CloseWrite() // the agent reads to the end of the stream: this is the end
	}
	if err != nil {
		return 0, nil, fmt.Errorf("sending the request: %w", err)
	}
	var head [4]byte
	if _, err := io.ReadFull(conn, head[:]); err != nil {
		return 0, nil, fmt.Errorf("reading the reply: %w", err)
	}
	n := binary.BigEndian.Uint32(head[:])
	if n > maxReply {
		return 0, nil, fmt.Errorf("reply frame of %d bytes is larger than %d", n, maxReply)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(conn, body); err != nil {
		return 0, nil, fmt.Errorf("reading the reply: %w", err)
	}
	var reply struct {
		V      int    `json:"v"`
		Exit   *int   `json:"exit"`
		Stdout []byte `json:"stdout"`
	}
	if err := json.Unmarshal(body, &reply); err != nil {
		return 0, nil, fmt.Errorf("decoding the reply: %w", err)
	}
	if reply.V != 1 || reply.Exit == nil || *reply.Exit < 0 || *reply.Exit > 255 {
		return 0, nil, errors.New(`decoding the reply: not {"v":1,"exit":0..255,"stdout":...}`)
	}
	return *reply.Exit, reply.Stdout, nil
}

// runProgram replaces the shim with tenant-routing, first restoring stdin if the shim consumed it.
func runProgram(version string, stdin []byte, consumed bool) {
	path, err := findProgram()
	if err == nil && consumed {
		err = restoreStdin(stdin)
	}
	if err == nil {
		err = syscall.Exec(path, append([]string{path}, os.Args[1:]...), os.Environ())
	}
	fail(version, notAvailable, err.Error())
}

// findProgram looks next to the shim's own executable, then in each CNI_PATH directory.
func findProgram() (string, error) {
	var dirs []string
	if self, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(self); err == nil {
			dirs = append(dirs, filepath.Dir(real))
		}
	}
	dirs = append(dirs, filepath.SplitList(os.Getenv("CNI_PATH"))...)
	for _, dir := range dirs {
		path := filepath.Join(dir, program)
		if info, err := os.Stat(path); dir != "" && err == nil && info.Mode().IsRegular() {
			return path, nil
		}
	}
	return "", fmt.Errorf("%s is neither next to this executable nor in CNI_PATH %q", program, os.Getenv("CNI_PATH"))
}

// restoreStdin makes fd 0 a file holding exactly the bytes read from stdin, offset 0 (WriteAt does
// not move it): an unlinked temporary file, as a memfd would need SYS_MEMFD_CREATE, which Go 1.19's
// syscall package lacks on amd64. Dup3, because arm64 has no dup2.
func restoreStdin(data []byte) error {
	f, err := os.CreateTemp("", "tenant-routing-stdin-")
	if err == nil {
		_ = os.Remove(f.Name())
		if _, err = f.WriteAt(data, 0); err == nil {
			err = syscall.Dup3(int(f.Fd()), 0, 0)
		}
	}
	if err != nil {
		return fmt.Errorf("keeping stdin for %s: %w", program, err)
	}
	return nil
}

// fail prints the shim's own CNI error (code 11: try again later) and exits 1.
func fail(version, msg, details string) {
	doc, _ := json.Marshal(struct {
		CniVersion string `json:"cniVersion"`
		Code       int    `json:"code"`
		Msg        string `json:"msg"`
		Details    string `json:"details"`
	}{version, 11, msg, details})
	_, _ = os.Stdout.Write(append(doc, '\n'))
	os.Exit(1)
}
