// Where a layer's optimizer step runs.
namespace L2L.Training.Update;

/// <summary>Where a layer is updated.</summary>
public enum UpdateLocation
{
    /// <summary>On the device, where the layer's weights stay (no gradient or weight transfer).</summary>
    Device,
    /// <summary>On host threads in the param server, overlapped with the device's work on other layers.</summary>
    Host,
}
