import { useCallback, useEffect, useRef, useState } from 'react';
import { api, renewSession, subscribeEvents } from './api.js';
import type { Image, Instance, InstanceType, Operation, VmkitEvent } from './lib/types.js';

export interface ConsoleData {
  instances: Record<string, Instance>;
  operations: Record<string, Operation>;
  images: Image[];
  types: InstanceType[];
  /** The event stream is connected: what is shown is live. */
  live: boolean;
  /** Counts stack events (replicas healthy or not, rolls): the Stacks page re-reads on a change. */
  stacksVersion: number;
  refreshImages(): void;
  refreshInstance(name: string): void;
}

/**
 * Everything the pages show, kept current by the event stream: lifecycle events re-read the
 * one instance they name, operation events carry the whole operation. On every (re)connect
 * of the stream the lists are read again, so nothing missed while it was down stays stale.
 */
export function useConsoleData(enabled: boolean): ConsoleData {
  const [instances, setInstances] = useState<Record<string, Instance>>({});
  const [operations, setOperations] = useState<Record<string, Operation>>({});
  const [images, setImages] = useState<Image[]>([]);
  const [types, setTypes] = useState<InstanceType[]>([]);
  const [live, setLive] = useState(false);
  const [stacksVersion, setStacksVersion] = useState(0);
  const pending = useRef(new Map<string, ReturnType<typeof setTimeout>>());

  const refreshInstance = useCallback((name: string) => {
    // Events come in bursts (starting, started, forward-added …): one read per burst.
    const timers = pending.current;
    if (timers.has(name)) return;
    timers.set(
      name,
      setTimeout(() => {
        timers.delete(name);
        api
          .instance(name)
          .then((inst) => setInstances((m) => ({ ...m, [name]: inst })))
          .catch((err: { code?: string }) => {
            if (err.code === 'VMKIT_INSTANCE_NOT_FOUND') setInstances(({ [name]: _gone, ...rest }) => rest);
          });
      }, 60),
    );
  }, []);

  const refreshAll = useCallback(() => {
    api
      .instances()
      .then((list) => setInstances(Object.fromEntries(list.map((i) => [i.name, i]))))
      .catch(() => undefined);
    api
      .operations()
      .then((list) => setOperations(Object.fromEntries(list.map((o) => [o.id, o]))))
      .catch(() => undefined);
  }, []);
  const refreshImages = useCallback(() => {
    api
      .images()
      .then(setImages)
      .catch(() => undefined);
    api
      .types()
      .then(setTypes)
      .catch(() => undefined);
  }, []);

  useEffect(() => {
    if (!enabled) return;
    refreshAll();
    refreshImages();
    const onEvent = (e: VmkitEvent) => {
      if (e.type === 'operation') {
        const op = e.metadata as Operation;
        if (op?.id) setOperations((m) => ({ ...m, [op.id]: op }));
        return;
      }
      if (!e.target) return;
      if (e.action?.startsWith('stack-')) {
        setStacksVersion((n) => n + 1);
        return;
      }
      // An image imported, uploaded, pulled, published or deleted: read the image list again.
      if (e.action?.startsWith('image-')) {
        refreshImages();
        return;
      }
      if (e.action === 'instance-deleted') {
        setInstances(({ [e.target!]: _gone, ...rest }) => rest);
        return;
      }
      refreshInstance(e.target);
    };
    const stop = subscribeEvents({
      onEvent,
      onOpen: () => {
        setLive(true);
        refreshAll();
      },
      onDown: () => {
        setLive(false);
        // Daemon restarted or session expired: renew it, or (a 401) show the sign-in page.
        renewSession().catch(() => undefined);
      },
    });
    // Uptime and other runtime figures change without events: a slow poll keeps them fresh.
    const poll = setInterval(refreshAll, 30_000);
    return () => {
      stop();
      clearInterval(poll);
      setLive(false);
    };
  }, [enabled, refreshAll, refreshImages, refreshInstance]);

  return { instances, operations, images, types, live, stacksVersion, refreshImages, refreshInstance };
}

/** The hash route: #/instances/web1/console → ['instances', 'web1', 'console'] + query. */
export function useRoute(): { parts: string[]; query: URLSearchParams } {
  const read = () => {
    const h = window.location.hash.replace(/^#\/?/, '');
    const [path = '', q = ''] = h.split('?');
    return { parts: path.split('/').filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(q) };
  };
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const on = () => setRoute(read());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return route;
}

export function go(path: string): void {
  window.location.hash = `#/${path}`;
}
