import { useEffect, useRef, useState, type FormEvent } from 'react';
import { api, uploadImage, type RepoImage, type Repository } from '../api.js';
import { ErrorBox, Field, ProgressBar } from '../components/ui.js';
import { useFeedback } from '../feedback.js';
import { formatBytes, formatMemory } from '../lib/format.js';
import { nameProblem } from '../lib/validate.js';
import { OperationRow } from './Operations.js';
import { go, type ConsoleData } from '../store.js';
import { Can } from '../role.js';

const FORMATS = ['qcow2', 'raw', 'vmdk', 'vdi', 'vhdx', 'ova'] as const;

/** An image name from a file name, like the daemon's default (lowercase, a-z 0-9 -). */
function nameFromFile(file: string): string {
  const stem = file
    .replace(/\.[^.]*$/, '')
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63);
  return stem || 'uploaded';
}

export function ImagesPage({ data }: { data: ConsoleData }) {
  return (
    <section>
      <div className="page-head">
        <h1>Images</h1>
        <div className="actions">
          <button onClick={data.refreshImages}>Refresh</button>
        </div>
      </div>
      <UploadImage data={data} />
      <Repositories data={data} />
      <h2>Images</h2>
      {data.images.length === 0 ? (
        <p className="muted">No images. The built-in appliance appears once it is built (npm run setup).</p>
      ) : (
        <table className="list images" data-testid="images">
          <thead>
            <tr>
              <th>Name</th>
              <th>Version</th>
              <th>Description</th>
              <th>Arch</th>
              <th>Defaults</th>
              <th>Disks</th>
              <th></th>
            </tr>
          </thead>
          <tbody>
            {data.images.map((i) => (
              <tr key={i.name} data-image={i.name}>
                <td data-label="Name" className="name">
                  {i.name}
                </td>
                <td data-label="Version">{i.version ?? '—'}</td>
                <td data-label="Description">{i.description ?? '—'}</td>
                <td data-label="Arch">{i.arch ?? '—'}</td>
                <td data-label="Defaults">
                  {i.defaults?.cpus ?? '?'} vCPU, {i.defaults?.memoryMiB ? formatMemory(i.defaults.memoryMiB) : '?'}
                </td>
                <td data-label="Disks">
                  {(i.disks ?? []).map((d) => (
                    <div key={d.name}>
                      {d.name}: {d.format}, {formatBytes(d.virtualSize)}
                    </div>
                  ))}
                </td>
                <td className="row-actions">
                  <Can need="operator">
                    <button className="primary" onClick={() => go(`create?image=${encodeURIComponent(i.name)}`)}>
                      Create instance
                    </button>
                  </Can>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

/**
 * "Upload image": the file goes as the raw body of POST /1.0/images/upload (XMLHttpRequest, so
 * the upload shows its progress), then the daemon imports it as an operation whose progress
 * follows. The format is the declared one, or — "from the file name" — its extension, checked
 * against the file's header by the daemon exactly as for `vmkit image import`.
 */
function UploadImage({ data }: { data: ConsoleData }) {
  const fb = useFeedback();
  const [open, setOpen] = useState(false);
  const [file, setFile] = useState<File | null>(null);
  const [name, setName] = useState('');
  const [format, setFormat] = useState('');
  const [submitted, setSubmitted] = useState(false);
  const [sent, setSent] = useState<number | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [opId, setOpId] = useState<string | null>(null);
  const abort = useRef<AbortController | null>(null);
  const taken = data.images.some((i) => i.name === name) && !opId;
  const problems = {
    file: file ? null : 'Choose a file.',
    name: nameProblem(name, 'the image') ?? (taken ? `There is already an image "${name}".` : null),
  };
  const uploading = sent !== null;
  const op = opId ? data.operations[opId] : undefined;
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setSubmitted(true);
    setError(null);
    if (problems.file || problems.name || !file) return;
    setOpId(null);
    setSent(0);
    abort.current = new AbortController();
    try {
      const started = await uploadImage(file, { name, filename: file.name, ...(format ? { diskFormat: format } : {}) }, setSent, abort.current.signal);
      fb.watch(started);
      setOpId(started.id);
      setSubmitted(false);
    } catch (err) {
      setError(err);
    } finally {
      setSent(null);
      abort.current = null;
    }
  };
  if (!open) {
    return (
      <div className="toolbar">
        <Can need="admin">
          <button className="primary" onClick={() => setOpen(true)} data-testid="upload-open">
            Upload image
          </button>
        </Can>
      </div>
    );
  }
  return (
    <form className="card upload" onSubmit={submit} noValidate data-testid="upload-form">
      <h2>Upload an image</h2>
      <div className="row">
        <Field label="File (qcow2, raw, vmdk, vdi, vhdx or OVA)" problem={submitted ? problems.file : null}>
          <input
            type="file"
            name="file"
            disabled={uploading}
            onChange={(e) => {
              const f = e.target.files?.[0] ?? null;
              setFile(f);
              if (f && !name) setName(nameFromFile(f.name));
            }}
          />
        </Field>
        <Field label="Image name" problem={submitted || name ? problems.name : null}>
          <input name="imageName" value={name} onChange={(e) => setName(e.target.value)} autoComplete="off" disabled={uploading} />
        </Field>
        <Field label="Format">
          <select name="diskFormat" value={format} onChange={(e) => setFormat(e.target.value)} disabled={uploading}>
            <option value="">from the file name</option>
            {FORMATS.map((f) => (
              <option key={f} value={f}>
                {f}
              </option>
            ))}
          </select>
        </Field>
        {uploading ? (
          <button type="button" className="warn" onClick={() => abort.current?.abort()}>
            Cancel upload
          </button>
        ) : (
          <button type="submit" className="primary" data-testid="upload-submit">
            Upload
          </button>
        )}
        <button type="button" className="link" onClick={() => setOpen(false)} disabled={uploading}>
          Close
        </button>
      </div>
      <p className="help">
        The file is checked like <code>vmkit image import</code> checks one: its header must match the format, and it may not name other files.
      </p>
      {uploading && (
        <div data-testid="upload-progress">
          <ProgressBar percent={Math.round((sent ?? 0) * 100)} status="running" />
          <p className="muted">
            Uploading {file ? formatBytes(Math.round((sent ?? 0) * file.size)) : ''} of {file ? formatBytes(file.size) : '?'} ({Math.round((sent ?? 0) * 100)}%)
          </p>
        </div>
      )}
      <ErrorBox error={error} onClose={() => setError(null)} />
      {op && (
        <ul className="ops" data-testid="upload-op">
          <OperationRow op={op} />
        </ul>
      )}
    </form>
  );
}

/**
 * The configured repositories (GET /1.0/repos, added with `vmkit repo add`) and the images each
 * offers (GET /1.0/repos/NAME/images); "Pull" downloads one (POST /1.0/images/pull), with the
 * operation's progress below.
 */
function Repositories({ data }: { data: ConsoleData }) {
  const fb = useFeedback();
  const [repos, setRepos] = useState<Repository[] | null>(null);
  const [offers, setOffers] = useState<Record<string, RepoImage[] | { error: unknown }>>({});
  const [error, setError] = useState<unknown>(null);
  const [n, setN] = useState(0);
  const [pulls, setPulls] = useState<string[]>([]);
  useEffect(() => {
    let stale = false;
    api.repos().then(
      (list) => {
        if (stale) return;
        setRepos(list);
        setError(null);
        for (const r of list) {
          api.repoImages(r.name).then(
            (imgs) => !stale && setOffers((o) => ({ ...o, [r.name]: imgs })),
            (err) => !stale && setOffers((o) => ({ ...o, [r.name]: { error: err } })),
          );
        }
      },
      (err) => !stale && setError(err),
    );
    return () => {
      stale = true;
    };
  }, [n]);
  const pull = async (repo: string, image: string) => {
    try {
      const op = await api.pull({ repo, image });
      fb.watch(op);
      setPulls((p) => [op.id, ...p]);
    } catch (err) {
      fb.error(err);
    }
  };
  const have = new Set(data.images.map((i) => i.name));
  const pullOps = pulls.map((id) => data.operations[id]).filter((o) => o !== undefined);
  if (repos !== null && repos.length === 0 && !error) {
    return (
      <p className="muted" data-testid="no-repos">
        No repositories configured (<code>vmkit repo add NAME URL</code> adds one).
      </p>
    );
  }
  return (
    <div data-testid="repos">
      <div className="page-head">
        <h2>Repositories</h2>
        <button className="small" onClick={() => setN(n + 1)}>
          Refresh
        </button>
      </div>
      <ErrorBox error={error} />
      {(repos ?? []).map((r) => {
        const o = offers[r.name];
        return (
          <div key={r.name} className="card repo" data-repo={r.name}>
            <h3>
              {r.name}{' '}
              <span className="muted small-text">
                {r.url}
                {r.token ? ' (with a token)' : ''}
              </span>
            </h3>
            {o === undefined ? (
              <p className="muted">Loading…</p>
            ) : 'error' in o ? (
              <ErrorBox error={o.error} />
            ) : o.length === 0 ? (
              <p className="muted">It offers no images.</p>
            ) : (
              <table className="list repo-images">
                <thead>
                  <tr>
                    <th>Image</th>
                    <th>Version</th>
                    <th>Description</th>
                    <th>Size</th>
                    <th></th>
                  </tr>
                </thead>
                <tbody>
                  {o.map((i) => (
                    <tr key={i.name} data-repo-image={i.name}>
                      <td data-label="Image" className="name">
                        {i.name}
                      </td>
                      <td data-label="Version">{i.version ?? '—'}</td>
                      <td data-label="Description">{i.description ?? '—'}</td>
                      <td data-label="Size">{i.files?.length ? formatBytes(i.files.reduce((a, f) => a + (f.size ?? 0), 0)) : '—'}</td>
                      <td className="row-actions">
                        <Can need="admin">
                          <button
                            className="primary"
                            disabled={have.has(i.name)}
                            title={have.has(i.name) ? 'An image with this name is here already' : undefined}
                            onClick={() => void pull(r.name, i.name)}
                            data-action="pull"
                          >
                            {have.has(i.name) ? 'Pulled' : 'Pull'}
                          </button>
                        </Can>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </div>
        );
      })}
      {pullOps.length > 0 && (
        <ul className="ops" data-testid="pull-ops">
          {pullOps.slice(0, 5).map((op) => (
            <OperationRow key={op.id} op={op} />
          ))}
        </ul>
      )}
    </div>
  );
}
