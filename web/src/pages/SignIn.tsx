import { useState, type FormEvent } from 'react';
import { api, setBearer } from '../api.js';
import { ErrorBox, Field } from '../components/ui.js';
import { useRequest } from '../feedback.js';

export function SignInPage({ onSignedIn }: { onSignedIn: () => void }) {
  const [token, setToken] = useState('');
  const { busy, error, setError, send } = useRequest();
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (!token)
      return setError({
        code: 'VMKIT_UNAUTHORIZED',
        message: 'Enter the token.',
        hint: 'Any API token works: an admin makes one with "vmkit token create NAME --role viewer|operator|admin".',
      });
    setError(null);
    await send(async () => {
      await api.signIn(token);
      setBearer(token);
      onSignedIn();
    });
  };
  return (
    <main className="signin">
      <form className="card" onSubmit={submit} data-testid="signin-form">
        <div className="brand big">
          <span className="logo">v</span> vmkit
        </div>
        <p className="muted">Sign in with an API token: the console shows what its role (viewer, operator, admin) may do.</p>
        <Field label="API token">
          <input type="password" name="token" autoComplete="current-password" autoFocus value={token} onChange={(e) => setToken(e.target.value)} />
        </Field>
        <ErrorBox error={error} />
        <button type="submit" className="primary wide" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
        <p className="help">The browser keeps a session cookie for 12 hours; the token stays in this page’s memory only and is never saved.</p>
      </form>
    </main>
  );
}
