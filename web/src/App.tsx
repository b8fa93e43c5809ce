import { useCallback, useEffect, useMemo, useRef, useState, type ReactNode } from 'react';
import { api, setBearer, setUnauthorizedHandler } from './api.js';
import { ErrorBox } from './components/ui.js';
import { FeedbackContext, type Feedback } from './feedback.js';
import type { Operation } from './lib/types.js';
import { CreatePage } from './pages/Create.js';
import { ImagesPage } from './pages/Images.js';
import { InstanceDetailPage } from './pages/InstanceDetail.js';
import { InstancesPage } from './pages/Instances.js';
import { NetworksPage } from './pages/Networks.js';
import { OperationsPage, isActive } from './pages/Operations.js';
import { SignInPage } from './pages/SignIn.js';
import { StacksPage } from './pages/Stacks.js';
import { useConsoleData, useRoute, type ConsoleData } from './store.js';
import { RoleContext } from './role.js';
import { roleAtLeast, type Whoami } from '../../src/wire/auth.js';

/**
 * The top-level pages. Features from other branches (snapshots, networks, cluster, image
 * upload) add an entry here and a page component; nothing else needs to change.
 */
export const PAGES: Array<{ id: string; title: string; render: (data: ConsoleData, parts: string[], query: URLSearchParams) => ReactNode }> = [
  {
    id: 'instances',
    title: 'Instances',
    render: (d, parts) => (parts[1] ? <InstanceDetailPage data={d} name={parts[1]} tab={parts[2]} /> : <InstancesPage data={d} />),
  },
  { id: 'operations', title: 'Operations', render: (d) => <OperationsPage data={d} /> },
  { id: 'images', title: 'Images', render: (d) => <ImagesPage data={d} /> },
  { id: 'networks', title: 'Networks', render: (d, parts) => <NetworksPage data={d} name={parts[1]} /> },
  { id: 'stacks', title: 'Stacks', render: (d) => <StacksPage data={d} /> },
];

interface Toast {
  id: number;
  error: unknown;
}

export function App() {
  const [auth, setAuth] = useState<'checking' | 'signed-out' | 'signed-in'>('checking');
  const [needsToken, setNeedsToken] = useState(true);
  const [host, setHost] = useState('');
  const [me, setMe] = useState<Whoami | null>(null);
  const data = useConsoleData(auth === 'signed-in');
  const { parts, query } = useRoute();
  const [toasts, setToasts] = useState<Toast[]>([]);
  const watched = useRef(new Set<string>());

  useEffect(() => {
    setUnauthorizedHandler(() => setAuth('signed-out'));
    api.session().then(
      (s) => {
        setNeedsToken(s.required);
        setAuth('signed-in');
      },
      () => setAuth('signed-out'),
    );
  }, []);
  useEffect(() => {
    if (auth !== 'signed-in') return setMe(null);
    api.server().then(
      (s) => setHost(s.hostName),
      () => undefined,
    );
    api.whoami().then(setMe, () => undefined);
  }, [auth]);

  const showError = useCallback((error: unknown) => {
    const id = Date.now() + Math.random();
    setToasts((t) => [...t.slice(-3), { id, error }]);
    setTimeout(() => setToasts((t) => t.filter((x) => x.id !== id)), 12_000);
  }, []);
  const feedback: Feedback = useMemo(
    () => ({
      error: showError,
      watch: (op: Operation) => {
        watched.current.add(op.id);
      },
    }),
    [showError],
  );
  // A watched operation that fails is said in words, wherever the user is by then.
  useEffect(() => {
    for (const id of watched.current) {
      const op = data.operations[id];
      if (!op || isActive(op)) continue;
      watched.current.delete(id);
      if (op.status === 'failure' && op.error) showError(op.error);
    }
  }, [data.operations, showError]);

  if (auth === 'checking') return <main className="signin muted">Loading…</main>;
  if (auth === 'signed-out') return <SignInPage onSignedIn={() => setAuth('signed-in')} />;
  // Until whoami answers, act as the weakest role: no action is shown that may be refused.
  const role = me?.role ?? 'viewer';

  const pageId = parts[0] ?? 'instances';
  const page = PAGES.find((p) => p.id === pageId);
  const active = Object.values(data.operations).filter(isActive).length;
  const signOut = async () => {
    await api.signOut().catch(() => undefined);
    setBearer(null);
    setAuth('signed-out');
  };

  return (
    <RoleContext.Provider value={role}>
      <FeedbackContext.Provider value={feedback}>
        <header className="top">
          <a className="brand" href="#/instances">
            <span className="logo">v</span> vmkit
          </a>
          <nav className="main-nav">
            {PAGES.map((p) => (
              <a key={p.id} href={`#/${p.id}`} className={p.id === pageId ? 'active' : ''} data-nav={p.id}>
                {p.title}
                {p.id === 'operations' && active > 0 && (
                  <span className="count" data-testid="active-ops">
                    {active}
                  </span>
                )}
              </a>
            ))}
          </nav>
          <span className="spacer" />
          <span
            className={`live ${data.live ? 'on' : 'off'}`}
            title={data.live ? 'Live: updates arrive from the event stream' : 'Reconnecting to the event stream…'}
            data-testid="live"
          >
            {data.live ? 'live' : 'offline'}
          </span>
          {host && <span className="host muted">{host}</span>}
          {me && (
            <span className="whoami muted" data-testid="whoami" data-role={me.role} title={`Signed in as ${me.name}: ${me.role}`}>
              {me.name} ({me.role})
            </span>
          )}
          {needsToken && (
            <button className="link" onClick={signOut}>
              Sign out
            </button>
          )}
        </header>
        <main className="content">
          {pageId === 'create' && !roleAtLeast(role, 'operator') ? (
            <p className="muted" data-testid="not-allowed">
              Creating instances needs the operator role; you are signed in as {role}. <a href="#/instances">Instances</a>
            </p>
          ) : pageId === 'create' ? (
            <CreatePage data={data} initialImage={query.get('image') ?? undefined} />
          ) : page ? (
            page.render(data, parts, query)
          ) : (
            <p className="muted">
              No such page. <a href="#/instances">Instances</a>
            </p>
          )}
        </main>
        <div className="toasts" aria-live="polite">
          {toasts.map((t) => (
            <ErrorBox key={t.id} error={t.error} onClose={() => setToasts((x) => x.filter((y) => y.id !== t.id))} />
          ))}
        </div>
      </FeedbackContext.Provider>
    </RoleContext.Provider>
  );
}
