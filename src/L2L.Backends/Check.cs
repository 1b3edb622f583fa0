// Argument checks shared by the kernel launchers: wrong shapes fail on the host with a clear message.
using ILGPU;

namespace L2L.Backends;

/// <summary>Shape checks for launcher arguments.</summary>
public static class Check
{
    /// <summary>Throws unless <paramref name="view"/> has exactly <paramref name="length"/> elements.</summary>
    public static void Length<T>(ArrayView<T> view, long length, string name) where T : unmanaged
    {
        if (view.Length != length)
            throw new ArgumentException($"'{name}' has {view.Length} elements, expected {length}.", name);
    }

    /// <summary>Throws unless <paramref name="view"/> has at least <paramref name="length"/> elements.</summary>
    public static void AtLeast<T>(ArrayView<T> view, long length, string name) where T : unmanaged
    {
        if (view.Length < length)
            throw new ArgumentException($"'{name}' has {view.Length} elements, needs at least {length}.", name);
    }

    /// <summary>Throws unless both views have the same length.</summary>
    public static void SameLength<T, U>(ArrayView<T> reference, ArrayView<U> view, string name) where T : unmanaged where U : unmanaged
    {
        if (view.Length != reference.Length)
            throw new ArgumentException($"'{name}' has {view.Length} elements, expected {reference.Length}.", name);
    }

    /// <summary>Throws unless every dimension is positive.</summary>
    public static void Positive(int value, string name)
    {
        if (value <= 0)
            throw new ArgumentOutOfRangeException(name, value, $"'{name}' must be positive.");
    }
}
