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
    {
        try
        {
            foreach (var spec in specs)
                _byName.Add(spec.Name, ints is not null && ints.Contains(spec.Name) ? _owned.Add(backend.Allocate<int>(spec)) : _owned.Add(backend.Allocate<float>(spec)));
        }
        catch
        {
            _owned.Dispose();
            throw;
        }
    }

    /// <summary>The float buffer named <paramref name="name"/>.</summary>
    public DeviceBuffer<float> Float(string name) => (DeviceBuffer<float>)_byName[name];

    /// <summary>The int buffer named <paramref name="name"/>.</summary>
    public DeviceBuffer<int> Int(string name) => (DeviceBuffer<int>)_byName[name];

    /// <inheritdoc/>
    public void Dispose() => _owned.Dispose();
}
