import { formatBytes, formatMemory } from '../lib/format.js';
import { go, type ConsoleData } from '../store.js';

export function ImagesPage({ data }: { data: ConsoleData }) {
  return (
    <section>
      <div className="page-head">
        <h1>Images</h1>
        <button onClick={data.refreshImages}>Refresh</button>
      </div>
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
                <td data-label="Name" className="name">{i.name}</td>
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
                  <button className="primary" onClick={() => go(`create?image=${encodeURIComponent(i.name)}`)}>
                    Create instance
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
