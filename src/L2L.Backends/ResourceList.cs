// Owns a set of device resources and releases them in reverse order of acquisition.
namespace L2L.Backends;

/// <summary>
/// Collects <see cref="IDisposable"/> resources (device buffers, pinned buffers, workspaces) as an
/// object acquires them, and disposes them last-first. Lets a constructor that fails half-way
/// release exactly what it had acquired.
/// </summary>
public sealed class ResourceList : IDisposable
{
    private readonly List<IDisposable> _items = new();

    /// <summary>Takes ownership of <paramref name="resource"/> and returns it.</summary>
    public T Add<T>(T resource) where T : IDisposable
    {
        _items.Add(resource);
        return resource;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        for (var i = _items.Count - 1; i >= 0; i--)
            _items[i].Dispose();
        _items.Clear();
    }
}
