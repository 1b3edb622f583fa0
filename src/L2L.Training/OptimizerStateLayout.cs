// Converts a layer's host optimizer state (per tensor: all m, then all v) to and from separate m and v arrays.
using L2L.Model;

namespace L2L.Training;

/// <summary>
/// The host optimizers keep Adam-style state per tensor as <c>[m (length), v (length)]</c> at offset
/// <c>2 * tensor.Offset</c> of the layer's state array. The on-device optimizer keeps m and v as two
/// arrays shaped like the layer. These helpers convert between the two so checkpoints are the same
/// whichever executor wrote them.
/// </summary>
public static class OptimizerStateLayout
{
    /// <summary>Splits a layer's host state into m and v arrays shaped like the layer.</summary>
    public static (float[] M, float[] V) Split(LayerLayout layer, float[] state)
    {
        if (state.Length != 2 * layer.Length)
            throw new InvalidDataException($"Optimizer state for '{layer.Name}' has {state.Length} floats, expected {2 * layer.Length}.");
        var m = new float[layer.Length];
        var v = new float[layer.Length];
        foreach (var slot in layer.Tensors)
        {
            var o = (int)slot.Offset;
            var n = (int)slot.Length;
            state.AsSpan(2 * o, n).CopyTo(m.AsSpan(o, n));
            state.AsSpan(2 * o + n, n).CopyTo(v.AsSpan(o, n));
        }
        return (m, v);
    }

    /// <summary>Joins m and v arrays shaped like the layer into the host state layout.</summary>
    public static float[] Join(LayerLayout layer, float[] m, float[] v)
    {
        var state = new float[2 * layer.Length];
        foreach (var slot in layer.Tensors)
        {
            var o = (int)slot.Offset;
            var n = (int)slot.Length;
            m.AsSpan(o, n).CopyTo(state.AsSpan(2 * o, n));
            v.AsSpan(o, n).CopyTo(state.AsSpan(2 * o + n, n));
        }
        return state;
    }
}
