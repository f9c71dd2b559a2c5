package egress

import "testing"

func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://host/x.tar.gz", "https://host/x.tar.gz"},
		{"http://user:pass@host:8080/a/b.tar?X-Amz-Signature=abc#frag", "http://host:8080/a/b.tar"},
		{"https://token@host/x", "https://host/x"},
		{"https://host/x?sig=1", "https://host/x"},
		{"http://[::1]:5000/p", "http://[::1]:5000/p"},
		{"://bad\x7f", "<invalid URL>"},
	} {
		if got := RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
