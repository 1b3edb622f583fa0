// Named views into a layer's one contiguous parameter (or gradient) block on the device.
using ILGPU;

namespace L2L.Model.Device;

/// <summary>Slices a device view of any element type (FP32 weights, 16-bit weights) holding one layer's block into its tensors by name.</summary>
/// <typeparam name="T">The element type: float, <see cref="L2L.Kernels.Bf16"/> or <see cref="ILGPU.Half"/>.</typeparam>
public readonly struct LayerViews<T> where T : unmanaged
{
    private readonly LayerLayout _layout;
    private readonly ArrayView<T> _block;

    /// <summary>Wraps <paramref name="block"/> (at least <c>layout.Length</c> elements) with the names of <paramref name="layout"/>.</summary>
    public LayerViews(LayerLayout layout, ArrayView<T> block)
    {
        if (block.Length < layout.Length)
            throw new ArgumentException($"A view of {block.Length} elements cannot hold layer '{layout.Name}' ({layout.Length} elements).", nameof(block));
        _layout = layout;
        _block = block;
    }

    /// <summary>The view of tensor <paramref name="localName"/> (e.g. <c>ln_1.weight</c>).</summary>
    public ArrayView<T> this[string localName]
    {
        get
        {
            var slot = _layout[localName];
            return _block.SubView(slot.Offset, slot.Length);
        }
    }

    /// <summary>The whole block.</summary>
    public ArrayView<T> Block => _block.SubView(0, _layout.Length);
}
