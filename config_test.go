package buffstreams

import "testing"

func TestFormatAddress(t *testing.T) {
	for _, tc := range [][3]string{
		{"", "5031", ":5031"},
		{"127.0.0.1", "5031", "127.0.0.1:5031"},
		{"::1", "5031", "[::1]:5031"},
		{"[::1]", "5031", "[::1]:5031"},
		{"fe80::1%eth0", "80", "[fe80::1%eth0]:80"},
		{"localhost", "0", "localhost:0"},
	} {
		if got := FormatAddress(tc[0], tc[1]); got != tc[2] {
			t.Errorf("FormatAddress(%q, %q) = %q, want %q", tc[0], tc[1], got, tc[2])
		}
	}
}
