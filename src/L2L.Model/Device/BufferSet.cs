// Device buffers allocated from a list of specs, looked up by name: the layers' workspaces are sized by the same
// static descriptions the planner reads.
using L2L.Backends;

namespace L2L.Model.Device;

/// <summary>Allocates every buffer of a description, in order, and hands them out by name; disposing releases them all.</summary>
public sealed class BufferSet : IDisposable
{
    private readonly ResourceList _owned = new();
    private readonly Dictionary<string, object> _byName = new(StringComparer.Ordinal);

    /// <summary>Allocates <paramref name="specs"/> on <paramref name="backend"/> (4-byte elements as float, unless named in <paramref name="ints"/>).</summary>
    public BufferSet(Backend backend, IEnumerable<BufferSpec> specs, ISet<string>? ints = null)
        : this(backend, specs, ints, static (b, spec) => b.Allocate<float>(spec))
    {
    }

    private BufferSet(Backend backend, IEnumerable<BufferSpec> specs, ISet<string>? ints, Func<Backend, BufferSpec, IDisposable> twoBytes)
    {
        try
        {
            foreach (var spec in specs)
                _byName.Add(spec.Name,
                    ints is not null && ints.Contains(spec.Name) ? _owned.Add(backend.Allocate<int>(spec))
                    : spec.ElementSize == 2 ? _owned.Add(twoBytes(backend, spec))
                    : _owned.Add(backend.Allocate<float>(spec)));
        }
        catch
        {
            _owned.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Allocates <paramref name="specs"/>: 2-byte elements as <typeparamref name="T"/> (a 16-bit storage type), 4-byte ones as float
    /// (or int where named in <paramref name="ints"/>). With <typeparamref name="T"/> float every spec has 4-byte elements.
    /// </summary>
    public static BufferSet Create<T>(Backend backend, IEnumerable<BufferSpec> specs, ISet<string>? ints = null) where T : unmanaged =>
        new(backend, specs, ints, static (b, spec) => b.Allocate<T>(spec));

    /// <summary>The buffer of <typeparamref name="T"/> elements named <paramref name="name"/>.</summary>
    public DeviceBuffer<T> Get<T>(string name) where T : unmanaged => (DeviceBuffer<T>)_byName[name];

    /// <summary>The float buffer named <paramref name="name"/>.</summary>
    public DeviceBuffer<float> Float(string name) => (DeviceBuffer<float>)_byName[name];

    /// <summary>The int buffer named <paramref name="name"/>.</summary>
    public DeviceBuffer<int> Int(string name) => (DeviceBuffer<int>)_byName[name];

    /// <inheritdoc/>
    public void Dispose() => _owned.Dispose();
}
