//! The token: from `?token=` (the URLs `cspulse demo` prints) or the sign-in
//! field (kept for the tab's session). The role and `csm_id` claims are read
//! from the JWT payload only to choose the views offered; the server checks
//! the signature and enforces access on every request.

export type Role = 'executive' | 'manager' | 'analyst' | 'csm' | 'wall';

export interface Identity {
  token: string | null;
  role: Role;
  csmId: string | null;
  sub: string | null;
  /** Expiry (ms since epoch), if the token says. */
  expiresAt: number | null;
}

const ROLES: Role[] = ['executive', 'manager', 'analyst', 'csm', 'wall'];
const STORAGE_KEY = 'cspulse.token';

function base64UrlDecode(s: string): string {
  const b64 = s.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(s.length / 4) * 4, '=');
  const bin = atob(b64);
  const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

/** The identity a token claims, or null when it is not a readable JWT. */
export function parseToken(token: string): Identity | null {
  const parts = token.trim().split('.');
  if (parts.length !== 3) return null;
  try {
    const claims = JSON.parse(base64UrlDecode(parts[1])) as Record<string, unknown>;
    const role = claims.role;
    if (typeof role !== 'string' || !ROLES.includes(role as Role)) return null;
    const csmId = typeof claims.csm_id === 'string' ? claims.csm_id : null;
    if (role === 'csm' && !csmId) return null;
    return {
      token: token.trim(),
      role: role as Role,
      csmId,
      sub: typeof claims.sub === 'string' ? claims.sub : null,
      expiresAt: typeof claims.exp === 'number' ? claims.exp * 1000 : null,
    };
  } catch {
    return null;
  }
}

/** The token from the page URL, else the one signed in with in this tab. */
export function tokenFromPage(location: Location, storage: Storage | null): string | null {
  const fromUrl = new URLSearchParams(location.search).get('token');
  if (fromUrl) return fromUrl;
  try {
    return storage?.getItem(STORAGE_KEY) ?? null;
  } catch {
    return null;
  }
}

export function remember(storage: Storage | null, token: string | null): void {
  try {
    if (token) storage?.setItem(STORAGE_KEY, token);
    else storage?.removeItem(STORAGE_KEY);
  } catch {
    /* storage disabled: the token lives in the URL only */
  }
}

/** The views of a role: the channels it may subscribe to (SPEC §6.2), and the accounts list (not a wall's). */
export function viewsFor(role: Role): ViewName[] {
  switch (role) {
    case 'executive':
    case 'manager':
    case 'analyst':
      return ['executive', 'manager', 'analyst', 'accounts'];
    case 'wall':
      return ['executive', 'manager'];
    case 'csm':
      return ['csm', 'accounts'];
  }
}

/** Whether a role may open a CSM's book (csm:<id>) from the manager view. */
export function mayDrill(role: Role): boolean {
  return role === 'executive' || role === 'manager';
}

export type ViewName = 'executive' | 'manager' | 'analyst' | 'csm' | 'accounts';
