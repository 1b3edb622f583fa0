// Named views into a layer's one contiguous parameter (or gradient) block on the device.
using ILGPU;

namespace L2L.Model.Device;

/// <summary>Slices a device view holding one layer's block into its tensors by name.</summary>
public readonly struct LayerViews
{
    private readonly LayerLayout _layout;
    private readonly ArrayView<float> _block;

    /// <summary>Wraps <paramref name="block"/> (at least <c>layout.Length</c> floats) with the names of <paramref name="layout"/>.</summary>
    public LayerViews(LayerLayout layout, ArrayView<float> block)
    {
        if (block.Length < layout.Length)
            throw new ArgumentException($"A view of {block.Length} floats cannot hold layer '{layout.Name}' ({layout.Length} floats).", nameof(block));
        _layout = layout;
        _block = block;
    }

    /// <summary>The view of tensor <paramref name="localName"/> (e.g. <c>ln_1.weight</c>).</summary>
    public ArrayView<float> this[string localName]
    {
        get
        {
            var slot = _layout[localName];
            return _block.SubView(slot.Offset, slot.Length);
        }
    }

    /// <summary>The whole block.</summary>
    public ArrayView<float> Block => _block.SubView(0, _layout.Length);
}
