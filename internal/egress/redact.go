// Package egress holds the rules for everything kiln contacts on a tenant's
// behalf: which hosts it may reach and how a URL it fetched may be shown.
package egress

import "net/url"

// RedactURL renders raw as scheme://host/path: no userinfo, no query and no
// fragment. Pre-signed URLs carry their signature in the query and basic
// auth sits in the userinfo; neither may reach an image, status, event, log
// line or error, so every place that shows a URL renders it through here.
// An unparsable URL is shown as "<invalid URL>", never echoed.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<invalid URL>"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}
