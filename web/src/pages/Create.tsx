import { useEffect, useState, type FormEvent } from 'react';
import { api } from '../api.js';
import { ErrorBox, Field, ProgressBar } from '../components/ui.js';
import { useFeedback } from '../feedback.js';
import { formatMemory } from '../lib/format.js';
import type { Operation } from '../lib/types.js';
import { cpusProblem, forwardProblems, memoryProblem, nameProblem, type ForwardDraft } from '../lib/validate.js';
import { go, type ConsoleData } from '../store.js';

export function CreatePage({ data, initialImage }: { data: ConsoleData; initialImage?: string }) {
  const fb = useFeedback();
  const [name, setName] = useState('');
  const [image, setImage] = useState(initialImage ?? '');
  const [sizing, setSizing] = useState<'type' | 'custom'>('type');
  const [type, setType] = useState('small');
  const [cpus, setCpus] = useState('1');
  const [memory, setMemory] = useState('256');
  const [forwards, setForwards] = useState<ForwardDraft[]>([]);
  const [start, setStart] = useState(true);
  const [touched, setTouched] = useState<Record<string, boolean>>({});
  const [submitted, setSubmitted] = useState(false);
  const [serverError, setServerError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [pending, setPending] = useState<Operation | null>(null);

  useEffect(() => {
    if (!image && data.images.length) setImage(data.images[0]!.name);
  }, [data.images, image]);

  const taken = name !== '' && data.instances[name] !== undefined && pending?.target !== name;
  const problems = {
    name: nameProblem(name) ?? (taken ? `"${name}" is already taken.` : null),
    image: image ? null : 'Choose an image.',
    cpus: sizing === 'custom' ? cpusProblem(cpus) : null,
    memory: sizing === 'custom' ? memoryProblem(memory) : null,
  };
  const fwdProblems = forwardProblems(forwards);
  const valid = Object.values(problems).every((p) => !p) && fwdProblems.every((p) => !p);
  const show = (k: string) => submitted || touched[k];
  const touch = (k: string) => setTouched((t) => ({ ...t, [k]: true }));

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setSubmitted(true);
    setServerError(null);
    if (!valid) return;
    setBusy(true);
    try {
      const op = await api.create({
        name,
        image,
        ...(sizing === 'type' ? { type } : { cpus: Number(cpus), memoryMiB: Number(memory) }),
        forwards: forwards.map((f) => ({ hostPort: Number(f.hostPort), guestPort: Number(f.guestPort), proto: f.proto })),
        start,
      });
      setPending(op);
    } catch (err) {
      setServerError(err);
      setBusy(false);
    }
  };

  // Stay on the form until the instance exists (then its list shows it come up live) or
  // the operation fails before that (then the form says why and can be fixed).
  useEffect(() => {
    if (!pending) return;
    const op = data.operations[pending.id] ?? pending;
    if (op.status === 'failure' || op.status === 'cancelled') {
      setServerError(op.error ?? { code: 'VMKIT_OPERATION_CANCELLED', message: 'The operation was cancelled.' });
      setPending(null);
      setBusy(false);
    } else if (data.instances[pending.target ?? ''] || op.status === 'success') {
      fb.watch(op);
      go('instances');
    }
  }, [pending, data.operations, data.instances, fb]);

  const setFwd = (i: number, patch: Partial<ForwardDraft>) => setForwards((fs) => fs.map((f, j) => (j === i ? { ...f, ...patch } : f)));
  const chosenType = data.types.find((t) => t.name === type);

  return (
    <section className="narrow">
      <div className="page-head">
        <h1>New instance</h1>
      </div>
      <form onSubmit={submit} noValidate data-testid="create-form" className="card">
        <Field label="Name" problem={show('name') ? problems.name : null} help="1–63 of a-z, 0-9 and -, starting and ending with a letter or digit">
          <input name="name" value={name} autoFocus autoComplete="off" spellCheck={false} onChange={(e) => setName(e.target.value)} onBlur={() => touch('name')} />
        </Field>
        <Field label="Image" problem={show('image') ? problems.image : null}>
          <select name="image" value={image} onChange={(e) => setImage(e.target.value)}>
            {data.images.length === 0 && <option value="">(no images)</option>}
            {data.images.map((i) => (
              <option key={i.name} value={i.name}>
                {i.name}
                {i.version ? ` (${i.version})` : ''}
              </option>
            ))}
          </select>
        </Field>
        <fieldset>
          <legend>Size</legend>
          <div className="segmented">
            <label>
              <input type="radio" name="sizing" checked={sizing === 'type'} onChange={() => setSizing('type')} /> Instance type
            </label>
            <label>
              <input type="radio" name="sizing" checked={sizing === 'custom'} onChange={() => setSizing('custom')} /> vCPUs and memory
            </label>
          </div>
          {sizing === 'type' ? (
            <Field label="Type" help={chosenType ? `${chosenType.cpus} vCPU, ${formatMemory(chosenType.memoryMiB)} — ${chosenType.description}` : undefined}>
              <select name="type" value={type} onChange={(e) => setType(e.target.value)}>
                {data.types.map((t) => (
                  <option key={t.name} value={t.name}>
                    {t.name} — {t.cpus} vCPU, {formatMemory(t.memoryMiB)}
                  </option>
                ))}
              </select>
            </Field>
          ) : (
            <div className="row">
              <Field label="vCPUs" problem={show('cpus') ? problems.cpus : null}>
                <input name="cpus" inputMode="numeric" value={cpus} onChange={(e) => setCpus(e.target.value)} onBlur={() => touch('cpus')} />
              </Field>
              <Field label="Memory (MiB)" problem={show('memory') ? problems.memory : null}>
                <input name="memory" inputMode="numeric" value={memory} onChange={(e) => setMemory(e.target.value)} onBlur={() => touch('memory')} />
              </Field>
            </div>
          )}
        </fieldset>
        <fieldset>
          <legend>Port forwards</legend>
          <p className="help">Host 127.0.0.1:port → guest port, on the instance's user-mode NIC.</p>
          {forwards.map((f, i) => (
            <div key={i} className="row forward-row">
              <Field label="Host port" problem={submitted ? fwdProblems[i] : null}>
                <input inputMode="numeric" name={`hostPort${i}`} value={f.hostPort} onChange={(e) => setFwd(i, { hostPort: e.target.value })} />
              </Field>
              <Field label="Guest port">
                <input inputMode="numeric" name={`guestPort${i}`} value={f.guestPort} onChange={(e) => setFwd(i, { guestPort: e.target.value })} />
              </Field>
              <Field label="Protocol">
                <select value={f.proto} onChange={(e) => setFwd(i, { proto: e.target.value as 'tcp' | 'udp' })}>
                  <option>tcp</option>
                  <option>udp</option>
                </select>
              </Field>
              <button type="button" className="link" onClick={() => setForwards((fs) => fs.filter((_, j) => j !== i))} aria-label="Remove forward">
                Remove
              </button>
            </div>
          ))}
          <button type="button" onClick={() => setForwards((fs) => [...fs, { hostPort: '', guestPort: '80', proto: 'tcp' }])}>
            Add a forward
          </button>
        </fieldset>
        <label className="check">
          <input type="checkbox" checked={start} onChange={(e) => setStart(e.target.checked)} name="start" /> Start it once created
        </label>
        {submitted && !valid && <p className="problem">Fix the fields marked above.</p>}
        <ErrorBox error={serverError} onClose={() => setServerError(null)} />
        {pending && <ProgressBar status="running" percent={data.operations[pending.id]?.progress?.percent} />}
        <div className="form-actions">
          <button type="button" onClick={() => go('instances')}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={busy} data-testid="create-submit">
            {busy ? 'Creating…' : start ? 'Create and start' : 'Create'}
          </button>
        </div>
      </form>
    </section>
  );
}
