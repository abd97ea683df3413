// Sign-in as Jupyter does it, keeping the token out of every URL: `overture serve` prints
// `<base>/#token=...`; a fragment never reaches the server, and the page moves the token into
// localStorage at once and takes the fragment out of the address bar and the history.

const KEY = "overture.token";

/** The token from the sign-in link, if this page was opened with one; the fragment is removed. */
export function takeTokenFromLink(): string | null {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token === null) return null;
  params.delete("token");
  const rest = params.toString();
  history.replaceState(history.state, "", `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
  return token.trim() || null;
}

export function storedToken(): string | null {
  try {
    return localStorage.getItem(KEY);
  } catch {
    return null; // storage disabled: the visitor signs in on every page
  }
}

export function storeToken(token: string): void {
  try {
    localStorage.setItem(KEY, token);
  } catch {
    // Storage disabled: the token lives as long as this page.
  }
}

export function forgetToken(): void {
  try {
    localStorage.removeItem(KEY);
  } catch {
    // Nothing stored.
  }
}
