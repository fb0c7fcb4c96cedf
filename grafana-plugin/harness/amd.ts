/**
 * A tiny AMD loader standing in for Grafana's SystemJS: `define(deps, factory)` resolves each
 * dependency from the modules the shell provides, and `load(url)` runs a script and resolves with
 * what its anonymous `define` produced. Only the shell: the plugin code is the shipped module.js.
 */
type Factory = (...deps: unknown[]) => unknown;

interface Define {
  (deps: string[] | Factory, factory?: Factory): void;
  amd: Record<string, unknown>;
}

export function installAmd(provided: Record<string, unknown>): (url: string) => Promise<unknown> {
  const pending: Array<{ resolve: (v: unknown) => void; reject: (e: unknown) => void }> = [];
  const requested: string[] = [];

  const define = ((deps: string[] | Factory, factory?: Factory) => {
    const list = Array.isArray(deps) ? deps : [];
    const fn = (Array.isArray(deps) ? factory : deps) as Factory;
    const waiter = pending.shift();
    try {
      const args = list.map((name) => {
        requested.push(name);
        if (!(name in provided)) {
          throw new Error(`module.js needs "${name}", which the harness shell does not provide`);
        }
        return provided[name];
      });
      const exports = fn(...args);
      waiter?.resolve(exports);
    } catch (err) {
      if (!waiter) {
        throw err;
      }
      waiter.reject(err);
    }
  }) as Define;
  define.amd = {};
  (window as unknown as { define: Define }).define = define;

  return (url: string) =>
    new Promise((resolve, reject) => {
      pending.push({ resolve, reject });
      const script = document.createElement('script');
      script.src = url;
      script.onerror = () => reject(new Error(`cannot load ${url}`));
      document.head.append(script);
    });
}
